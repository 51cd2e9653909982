//! The standard `process_*` families (CPU, memory, file descriptors, start time), read
//! from `/proc/self`.

use std::fmt::Write;

use super::family;

/// Appends the standard `process_*` families (as the Prometheus client libraries name
/// them), read from `/proc/self`. Off Linux the families are simply absent.
pub(crate) fn render_process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields = stat_fields(&stat);
    // /proc reports times in USER_HZ, which Linux fixes at 100 for user space.
    const HZ: f64 = 100.0;
    if let Some(f) = &fields {
        // After the command name: utime is field 14, stime 15, starttime 22, vsize 23,
        // rss (pages) 24 — here 0-based from field 3.
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            family(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
            );
            let _ = writeln!(out, "process_cpu_seconds_total {}", (u + s) as f64 / HZ);
        }
        if let Some(v) = num(20) {
            family(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
            );
            let _ = writeln!(out, "process_virtual_memory_bytes {v}");
        }
        if let (Some(start), Some(btime)) = (num(19), boot_time()) {
            family(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            let _ = writeln!(
                out,
                "process_start_time_seconds {}",
                btime as f64 + start as f64 / HZ
            );
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(bytes) = status_kib(&status, "VmRSS:").and_then(|k| k.checked_mul(1024)) {
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {bytes}");
    }
    // No standard name exists for the high-water mark; load tests read it.
    if let Some(bytes) = status_kib(&status, "VmHWM:").and_then(|k| k.checked_mul(1024)) {
        family(
            out,
            "tessera_process_peak_resident_bytes",
            "gauge",
            "Peak resident memory size in bytes (VmHWM).",
        );
        let _ = writeln!(out, "tessera_process_peak_resident_bytes {bytes}");
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        let open = dir.count().saturating_sub(1);
        family(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {open}");
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = max_open_files(&limits) {
        family(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(n)
}

/// The fields of `/proc/<pid>/stat` after the command name, which may hold spaces and
/// parentheses — so fields are counted after its last `)`. Index 0 is the state.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Boot time in Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let status = "Name:\ttessera\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib("VmRSS:\t12 pages", "VmRSS:"), None);

        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 777 4096 9";
        let f = stat_fields(stat).unwrap();
        assert_eq!((f[11], f[12], f[19], f[20]), ("250", "50", "777", "4096"));
        assert_eq!(stat_fields("garbage"), None);

        let limits = "Limit Soft Limit Hard Limit Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_families_on_linux() {
        let mut out = String::new();
        render_process(&mut out);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "tessera_process_peak_resident_bytes ",
        ] {
            assert!(out.contains(name), "{name} missing from {out}");
        }
    }
}
