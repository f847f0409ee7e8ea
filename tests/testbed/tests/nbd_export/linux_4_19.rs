//! Linux 4.19's system-call table, enforced on a newer kernel: XCP-ng 8.2
//! and 8.3 run a 4.19 dom0, and the test bed's guest runs 6.12. A seccomp
//! filter makes every x86_64 system call 4.19 does not have fail with
//! `ENOSYS`, exactly as 4.19 answers it, for the process that installs it
//! and everything it starts (the plugin, the supervisor, the daemon).
//!
//! 4.19's x86_64 table (`arch/x86/entry/syscalls/syscall_64.tbl` at v4.19)
//! ends at 334 (`rseq`, added in 4.18; `io_pgetevents` is 333). The next
//! numbers came later: 424 onwards from 5.1 (`pidfd_send_signal`, then
//! `io_uring_setup` 425, `clone3` 435, `openat2` 437, `close_range` 436, …)
//! and 335 (`uretprobe`) in 6.11; 335–423 were never assigned on x86_64
//! before that. x32 numbers (bit 30) are refused too. What this does not
//! emulate: flags, socket options, netlink attributes and ioctls that
//! exist on 6.12 but not on 4.19.

use seccompiler::sock_filter;

/// The last system call number of Linux 4.19 on x86_64 (`rseq`).
const LAST_OF_4_19: u32 = 334;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
const ENOSYS: u32 = 38;

// Classic BPF opcodes (linux/filter.h, linux/seccomp.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JMP_JEQ_K: u16 = 0x05 | 0x10;
const JMP_JGT_K: u16 = 0x05 | 0x20;
const JMP_JGE_K: u16 = 0x05 | 0x30;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The filter: an x86_64 call numbered above 4.19's last, or an x32 call,
/// gets `ENOSYS`; another architecture's call kills the process (the guest
/// is x86_64 only).
fn program() -> Vec<sock_filter> {
    vec![
        op(LD_W_ABS, 0, 0, ARCH),
        op(JMP_JEQ_K, 0, 5, AUDIT_ARCH_X86_64),
        op(LD_W_ABS, 0, 0, NR),
        op(JMP_JGE_K, 2, 0, X32_SYSCALL_BIT),
        op(JMP_JGT_K, 1, 0, LAST_OF_4_19),
        op(RET_K, 0, 0, RET_ALLOW),
        op(RET_K, 0, 0, RET_ERRNO | ENOSYS),
        op(RET_K, 0, 0, RET_KILL_PROCESS),
    ]
}

/// Installs the filter on this (single-threaded) process; everything it
/// starts from now on inherits it.
pub fn enforce() -> Result<(), String> {
    seccompiler::apply_filter(&program()).map_err(|e| format!("cannot install the 4.19 system-call filter: {e}"))
}
