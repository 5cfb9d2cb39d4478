//! CPU time of processes, from `/proc` (Linux only; elsewhere the figures are absent).

use std::sync::OnceLock;

/// Clock ticks a second (`getconf CLK_TCK`, 100 when it cannot be asked).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Seconds of CPU in `ticks`.
pub fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / ticks_per_second()
}

fn ticks_of(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// User plus system CPU ticks used so far by process `pid`.
pub fn process_ticks(pid: u32) -> Option<u64> {
    ticks_of(&format!("/proc/{pid}/stat"))
}

/// User plus system CPU ticks used so far by this process.
pub fn own_ticks() -> Option<u64> {
    ticks_of("/proc/self/stat")
}

/// Busy CPU ticks of the whole machine so far, all cores together (everything but idle
/// and iowait).
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(total - idle)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU used by processes other than these, from three snapshots of (machine, a, b) ticks,
/// in % of one core over `secs`.
pub fn others_pct(
    before: (Option<u64>, Option<u64>, Option<u64>),
    after: (Option<u64>, Option<u64>, Option<u64>),
    secs: f64,
) -> Option<f64> {
    let machine = after.0?.checked_sub(before.0?)?;
    let ours = after.1.unwrap_or(0).saturating_sub(before.1.unwrap_or(0))
        + after.2?.saturating_sub(before.2?);
    Some(ticks_to_secs(machine.saturating_sub(ours)) / secs * 100.0)
}

/// The CPU model named in `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// The type of the file system holding `path` (the longest matching mount point).
pub fn filesystem_type(path: &std::path::Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), fstype.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fstype)| fstype)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cpu_time_is_readable() {
        if cfg!(target_os = "linux") {
            assert!(super::own_ticks().is_some());
        }
    }
}
