// The app's service worker: keeps the app shell in a cache named by the version of the
// files, so that the app opens with no network at all; a binary with other files
// serves this script with another version, which the browser notices on its next
// check, installs, and lets take over. The API is never cached: fixes go through the
// IndexedDB queue, and reads must be true or fail.

const VERSION = '__VERSION__';
const CACHE = `patrol-app-${VERSION}`;
const SHELL = __SHELL__;
const CONFIG = '/app/config.json';

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches.open(CACHE)
      .then((cache) => cache.addAll([...SHELL, CONFIG].map((url) => new Request(url, { cache: 'reload' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('patrol-app-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname === CONFIG) {
    // The server's settings when it answers, the kept copy when it does not.
    event.respondWith(
      fetch(request)
        .then((response) => {
          if (response.ok) {
            const copy = response.clone();
            caches.open(CACHE).then((cache) => cache.put(CONFIG, copy));
          }
          return response;
        })
        .catch(() => caches.match(CONFIG, { cacheName: CACHE })),
    );
    return;
  }
  const path = url.pathname === '/app' || url.pathname === '/app/index.html' ? '/app/' : url.pathname;
  if (!SHELL.includes(path)) return;
  event.respondWith(
    caches.match(path, { cacheName: CACHE }).then((hit) => hit || fetch(request)),
  );
});
