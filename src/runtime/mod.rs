//! The runtime: one pinned thread per core, each running a compio runtime on io_uring with
//! `SINGLE_ISSUER | COOP_TASKRUN | DEFER_TASKRUN`, and the messages between cores and the
//! control thread.
//!
//! This is the only module that names compio's builders, so the runtime stays replaceable.
//! It owns thread creation, pinning and ring setup; what a core does is `server::core`'s job.

pub mod messages;
pub mod timer;

use std::collections::HashSet;
use std::io;

pub use messages::{FromCore, ToCore};
pub use timer::{Elapsed, Timers};

/// Builds a core's runtime, pinned to `cpu` when given.
///
/// The three ring flags cut server CPU per request from 7.0 µs to 3.9 µs on our machines
/// (ARCHITECTURE.md §2): with them the kernel runs completions only when we enter the ring,
/// on our thread, instead of interrupting us with task work.
pub fn build_runtime(cpu: Option<usize>) -> io::Result<compio::runtime::Runtime> {
    let mut proactor = compio::driver::ProactorBuilder::new();
    proactor
        .capacity(4096)
        .single_issuer(true)
        .coop_taskrun(true)
        .defer_taskrun(true);
    let mut builder = compio::runtime::RuntimeBuilder::new();
    builder.with_proactor(proactor);
    if let Some(cpu) = cpu {
        builder.thread_affinity(HashSet::from([cpu]));
    }
    builder.build()
}

/// CPUs this process may run on (its affinity mask), in order. Cores are pinned to these.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bitset; sched_getaffinity fills it for this thread (pid 0)
    // and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..online_cpus()).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&i| libc::CPU_ISSET(i, &set))
            .collect()
    }
}

/// Number of CPUs available to this process: the default for `server.cores`.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_builds_with_ring_flags_and_runs() {
        let rt =
            build_runtime(None).expect("io_uring with SINGLE_ISSUER|COOP_TASKRUN|DEFER_TASKRUN");
        let v = rt.block_on(async {
            compio::time::sleep(std::time::Duration::from_millis(1)).await;
            7
        });
        assert_eq!(v, 7);
    }

    #[test]
    fn allowed_cpus_is_not_empty() {
        assert!(!allowed_cpus().is_empty());
        assert!(online_cpus() >= 1);
    }
}
