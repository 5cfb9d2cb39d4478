//! Cursor pagination: `limit` (default 100, at most 1000) and an opaque `cursor`;
//! answers are `{"items": [...], "next_cursor": "..." | null}`.

use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiResult, Violations};

/// Default page size.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page size.
pub const MAX_LIMIT: u64 = 1000;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A validated page request: how many, and the id to continue after.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// Items to return.
    pub limit: u64,
    /// Continue after this id (ids are UUID v7, so id order is creation order).
    pub after: Option<Uuid>,
}

impl PageRequest {
    /// Checks `limit` and decodes `cursor`, recording what is wrong.
    pub fn parse(limit: Option<i64>, cursor: Option<&str>, errors: &mut Violations) -> PageRequest {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as u64,
            Some(_) => {
                errors.add("limit", format!("must be between 1 and {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        };
        let after = match cursor {
            None | Some("") => None,
            Some(c) => match decode_cursor(c) {
                Some(id) => Some(id),
                None => {
                    errors.add("cursor", "is not a cursor this server gave out");
                    None
                }
            },
        };
        PageRequest { limit, after }
    }

    /// Parses and fails at once when anything is wrong.
    pub fn from_query(limit: Option<i64>, cursor: Option<&str>) -> ApiResult<PageRequest> {
        let mut errors = Violations::new();
        let page = PageRequest::parse(limit, cursor, &mut errors);
        errors.finish()?;
        Ok(page)
    }

    /// How many rows to fetch: one more than the limit, to know whether more follow.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }

    /// Turns fetched rows into a page.
    pub fn finish<R, T>(
        &self,
        mut rows: Vec<R>,
        id: impl Fn(&R) -> Uuid,
        map: impl FnMut(R) -> T,
    ) -> Page<T> {
        let more = rows.len() as u64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(id(r)))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}

fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    Uuid::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_bad_input() {
        let id = Uuid::now_v7();
        let page = PageRequest::from_query(Some(5), Some(&encode_cursor(id))).unwrap();
        assert_eq!(page.after, Some(id));
        assert_eq!(page.limit, 5);
        assert!(PageRequest::from_query(Some(0), None).is_err());
        assert!(PageRequest::from_query(Some(1001), None).is_err());
        assert!(PageRequest::from_query(None, Some("!!")).is_err());
    }

    #[test]
    fn finish_sets_next_cursor_only_when_more_follow() {
        let page = PageRequest::from_query(Some(2), None).unwrap();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let p = page.finish(ids.clone(), |id| *id, |id| id);
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.next_cursor, Some(encode_cursor(ids[1])));
        let p = page.finish(ids[..2].to_vec(), |id| *id, |id| id);
        assert_eq!(p.next_cursor, None);
    }
}
