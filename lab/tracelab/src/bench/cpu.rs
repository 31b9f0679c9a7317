//! CPU time of processes, from `/proc/<pid>/stat`.

/// Linux reports `utime` and `stime` in USER_HZ ticks, 100 per second on
/// every architecture it runs on (the kernel converts to it for userspace).
const TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time of process `pid` (all its threads, live and
/// exited), in microseconds; `None` when it is gone or the file is odd.
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_us(&stat)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in µs.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted after its last `)`.
fn parse_stat_cpu_us(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: field 3 (state) is the first; utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / TICKS_PER_SEC)
}

/// The one-minute load average of the machine (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime() {
        let line = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_cpu_us(line), Some(3_000_000));
        assert_eq!(parse_stat_cpu_us("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_cpu_us(pid).is_some());
        assert!(load_average().is_some());
    }
}
