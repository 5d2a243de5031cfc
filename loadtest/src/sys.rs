//! Linux specifics: the open-file limit, source addresses, and sampling a
//! process's CPU time and resident memory from `/proc`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a [`Monitor`] samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux reports them in
/// `USER_HZ`, which is 100 on every architecture Rust targets.
const USER_HZ: f64 = 100.0;

/// Raises `RLIMIT_NOFILE` to the hard limit, and past it to `needed` where the
/// kernel allows that (root with `CAP_SYS_RESOURCE`). Returns the soft limit
/// in force afterwards.
#[allow(unsafe_code)]
pub(crate) fn raise_nofile_limit(needed: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the `rlimit` struct
    // passed by pointer, which lives on this stack frame for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if needed > lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: needed,
                rlim_max: needed,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return needed;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Source address of connection `i` out of `n` addresses: 127.0.0.(1 + i mod
/// n), so each address needs at most clients/n ephemeral ports.
pub(crate) fn source_ip(i: u32, n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::LOCALHOST) + i % n.max(1),
    ))
}

/// CPU time and resident memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    /// utime + stime, in seconds.
    pub(crate) cpu_s: f64,
    /// `VmRSS`, in bytes.
    pub(crate) rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` `None`: this
/// process); `None` once the process is gone.
pub(crate) fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let stat = fs::read_to_string(format!("{dir}/stat")).ok()?;
    // After "(comm)" (which may hold spaces) come field 3 (state) onwards;
    // utime and stime are fields 14 and 15.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let status = fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Usage {
        cpu_s: (utime + stime) as f64 / USER_HZ,
        rss_bytes: rss_kb * 1024,
    })
}

/// Samples a process every 100 ms on a thread of its own (so a busy runtime
/// cannot delay it) and keeps the peak RSS.
pub(crate) struct Monitor {
    pid: Option<u32>,
    peak_rss: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts sampling `pid` (`None`: this process).
    pub(crate) fn start(pid: Option<u32>) -> Self {
        let peak_rss = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (peak_rss.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("proc-sampler".into())
            .spawn(move || {
                while !halt.load(Relaxed) {
                    let Some(sample) = usage(pid) else { break };
                    peak.fetch_max(sample.rss_bytes, Relaxed);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
            .ok();
        Self {
            pid,
            peak_rss,
            stop,
            thread,
        }
    }

    /// The process id sampled (`None`: this process).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// CPU seconds the process has used so far; `None` once it is gone.
    pub(crate) fn cpu_s(&self) -> Option<f64> {
        usage(self.pid).map(|u| u.cpu_s)
    }

    /// Stops sampling and returns the peak RSS in bytes.
    pub(crate) fn stop(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let last = usage(self.pid).map_or(0, |u| u.rss_bytes);
        self.peak_rss.load(Relaxed).max(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_cycle_from_127_0_0_1() {
        let ip = |i, n| source_ip(i, n).to_string();
        assert_eq!(ip(0, 1), "127.0.0.1");
        assert_eq!(ip(7, 1), "127.0.0.1");
        assert_eq!(ip(0, 4), "127.0.0.1");
        assert_eq!(ip(3, 4), "127.0.0.4");
        assert_eq!(ip(5, 4), "127.0.0.2");
        assert_eq!(ip(255, 300), "127.0.1.0");
    }

    #[test]
    fn reads_its_own_usage() {
        let u = usage(None).expect("/proc/self is readable");
        assert!(u.rss_bytes > 0);
        assert!(u.cpu_s >= 0.0);
        let m = Monitor::start(None);
        assert!(m.cpu_s().is_some());
        assert!(m.stop() > 0);
    }
}
