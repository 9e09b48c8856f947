//! `init-oci`: PID 1 of a supermachine guest that boots an OCI image.
//!
//! Mounts the API file systems, overlays the squashfs image layers with a tmpfs, mounts the
//! requested volumes, switches root, then stays PID 1 and supervises two children: the agent
//! (`/.supermachine/agent`) and the image's entrypoint. docs/INIT-OCI.md has the whole story
//! and the exit-status table.
//!
//! Never exits as PID 1 (that panics the kernel): every failure prints one
//! `init-oci: error: ...` line and `init-oci: exit status N`, then powers the VM off.

#[cfg(not(target_os = "linux"))]
compile_error!("init-oci runs only on Linux");

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use supermachine_init::cmdline::{Cmdline, OnExit};
use supermachine_init::config::{find_program, get_env, ImageConfig, Process};
use supermachine_init::runtime::{self, DeltaFiles};
use supermachine_init::user::{self, Ids};
use supermachine_init::{Fatal, Status, WORKLOAD_PID_FILE};

const NEWROOT: &str = "/newroot";
const LAYERS: &str = "/sm-layers";
const RW: &str = "/sm-rw";
/// Signals PID 1 waits for: the first five are forwarded to the workload; SIGTERM/SIGPWR stop.
const FORWARDED: [libc::c_int; 5] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2];
const HANDLED: [libc::c_int; 7] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGPWR];

fn log(msg: &str) {
    let line = format!("init-oci: {msg}\n");
    let mut b = line.as_bytes();
    while !b.is_empty() {
        let n = unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            break;
        }
        b = &b[n as usize..];
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cstr(s: impl AsRef<[u8]>) -> CString {
    // Every string reaching here was checked for NUL bytes (config parser) or is a path we built.
    CString::new(s.as_ref().to_vec()).unwrap_or_default()
}

fn fail(f: Fatal) -> ! {
    log(&format!("error: {}", f.msg));
    shutdown(f.status)
}

/// Ends the VM: TERM everyone, up to 1 s for them to go, KILL the rest, sync, power off.
fn shutdown(status: Status) -> ! {
    unsafe {
        libc::kill(-1, libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            if libc::kill(-1, 0) < 0 && errno() == libc::ESRCH {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
    }
    log(&format!("exit status {}", status.code()));
    unsafe {
        libc::reboot(libc::RB_POWER_OFF);
        libc::reboot(libc::RB_HALT_SYSTEM);
    }
    loop {
        unsafe { libc::pause() };
    }
}

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    let data_ptr = if data.is_empty() { std::ptr::null() } else { d.as_ptr().cast() };
    let fs_ptr = if fstype.is_empty() { std::ptr::null() } else { f.as_ptr() };
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), fs_ptr, flags, data_ptr) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount_or(status: Status, src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<(), Fatal> {
    std::fs::create_dir_all(target).map_err(|e| Fatal::new(status, format!("cannot create mount point {target}: {e}")))?;
    match mount(src, target, fstype, flags, data) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && status == Status::EarlyMount => Ok(()),
        Err(e) => Err(Fatal::new(status, format!("cannot mount {} {src} on {target}: {e}", if fstype.is_empty() { "(move)" } else { fstype }))),
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if unsafe { libc::getpid() } != 1 {
        std::process::exit(host_mode(&args));
    }
    std::panic::set_hook(Box::new(|info| {
        log(&format!("error: internal error: {}", info.to_string().replace('\n', " ")));
        shutdown(Status::Internal);
    }));
    unsafe {
        libc::umask(0o022);
        libc::reboot(libc::RB_DISABLE_CAD);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in HANDLED {
            libc::sigaddset(&mut set, s);
            libc::signal(s, on_signal as *const () as libc::sighandler_t);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    match boot() {
        Ok(sup) => sup.run(),
        Err(f) => fail(f),
    }
}

/// Outside a VM: `init-oci --version`, or `init-oci --check CONFIG.json ['CMDLINE']` to see the
/// process a config resolves to. Returns the exit code.
fn host_mode(args: &[String]) -> i32 {
    match args.get(1).map(String::as_str) {
        Some("--version") => {
            println!("init-oci {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("--check") if args.len() >= 3 => {
            let cmdline = match Cmdline::parse(args.get(3).map(String::as_str).unwrap_or("")) {
                Ok(c) => c,
                Err(e) => return report(Fatal::new(Status::BadCmdline, e)),
            };
            let image = match std::fs::read(&args[2]) {
                Ok(b) => match ImageConfig::parse(&b) {
                    Ok(c) => Some(c),
                    Err(e) => return report(Fatal::new(Status::BadConfig, format!("{}: {e}", args[2]))),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return report(Fatal::new(Status::BadConfig, format!("{}: {e}", args[2]))),
            };
            match Process::resolve(image.as_ref(), &cmdline.overrides, &args[2]) {
                Ok(p) => {
                    println!("args: {:?}\nenv: {:?}\ncwd: {}\nuser: {:?}", p.args, p.env, p.cwd, p.user);
                    0
                }
                Err(f) => report(f),
            }
        }
        _ => {
            eprintln!("init-oci: error: must run as PID 1 (the guest kernel's init)\n\
                       usage: init-oci --version | init-oci --check CONFIG.json ['KERNEL CMDLINE']");
            Status::Internal.code() as i32
        }
    }
}

fn report(f: Fatal) -> i32 {
    eprintln!("init-oci: error: {}\ninit-oci: exit status {}", f.msg, f.status.code());
    f.status.code() as i32
}

/// fds 0-2 on /dev/console when the kernel could not give us a console.
fn ensure_console() {
    unsafe {
        for fd in 0..3 {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                let c = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
                if c >= 0 && c != fd {
                    libc::dup2(c, fd);
                    libc::close(c);
                }
            }
        }
    }
}

fn early_mounts() -> Result<(), Fatal> {
    let e = Status::EarlyMount;
    let nse = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount_or(e, "devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    ensure_console();
    mount_or(e, "proc", "/proc", "proc", nse, "")?;
    mount_or(e, "sysfs", "/sys", "sysfs", nse, "")?;
    mount_or(e, "devpts", "/dev/pts", "devpts", libc::MS_NOSUID | libc::MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5")?;
    mount_or(e, "shm", "/dev/shm", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=1777")?;
    for (link, target) in [("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"), ("/dev/stdout", "/proc/self/fd/1"),
                           ("/dev/stderr", "/proc/self/fd/2"), ("/dev/ptmx", "pts/ptmx")] {
        if std::fs::symlink_metadata(link).is_err() {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
    Ok(())
}

fn set_clock(secs: i64, nanos: i64) {
    let ts = libc::timespec { tv_sec: secs as _, tv_nsec: nanos as _ };
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log(&format!("warning: cannot set the clock: {}", io::Error::last_os_error()));
    }
}

fn is_block(path: &str) -> bool {
    std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false)
}

fn has_squashfs_magic(dev: &str) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(dev).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"hsqs"
}

/// Waits up to 2 s for `cond` (devices can still be probing when init starts).
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > Duration::from_secs(2) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The image layers, bottom first.
fn find_layers(c: &Cmdline) -> Result<Vec<String>, Fatal> {
    if !c.rootfs.is_empty() {
        for d in &c.rootfs {
            if !wait_for(|| is_block(d)) {
                return Err(Fatal::new(Status::NoRootfs, format!("no image rootfs: {d} (from sm.rootfs=) is not a block device")));
            }
        }
        return Ok(c.rootfs.clone());
    }
    let scan = || -> Vec<String> {
        let mut devs: Vec<String> = std::fs::read_dir("/dev").into_iter().flatten().flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 3 && n.starts_with("vd") && n.as_bytes()[2].is_ascii_lowercase())
            .map(|n| format!("/dev/{n}"))
            .filter(|d| is_block(d) && !c.volumes.iter().any(|v| &v.device == d) && has_squashfs_magic(d))
            .collect();
        devs.sort();
        devs
    };
    let mut layers = Vec::new();
    wait_for(|| {
        layers = scan();
        !layers.is_empty()
    });
    if layers.is_empty() {
        return Err(Fatal::new(Status::NoRootfs, "no image rootfs: no /dev/vd? device holds a squashfs (name the layers with sm.rootfs=)"));
    }
    Ok(layers)
}

fn mount_rootfs(layers: &[String]) -> Result<(), Fatal> {
    let mut dirs = Vec::new();
    for (i, dev) in layers.iter().enumerate() {
        let dir = format!("{LAYERS}/{i}");
        let ro = libc::MS_RDONLY;
        if has_squashfs_magic(dev) {
            mount_or(Status::RootfsMount, dev, &dir, "squashfs", ro, "")?;
        } else if mount_or(Status::RootfsMount, dev, &dir, "ext4", ro, "").is_err() {
            mount_or(Status::RootfsMount, dev, &dir, "erofs", ro, "")
                .map_err(|_| Fatal::new(Status::RootfsMount, format!("cannot mount {dev}: not a squashfs, ext4 or erofs image")))?;
        }
        dirs.push(dir);
    }
    mount_or(Status::RootfsMount, "sm-rw", RW, "tmpfs", 0, "mode=0755")?;
    for d in ["upper", "work"] {
        std::fs::create_dir_all(format!("{RW}/{d}")).map_err(|e| Fatal::new(Status::RootfsMount, format!("{RW}/{d}: {e}")))?;
    }
    dirs.reverse(); // overlay wants the top layer first
    let opts = format!("lowerdir={},upperdir={RW}/upper,workdir={RW}/work", dirs.join(":"));
    mount_or(Status::RootfsMount, "overlay", NEWROOT, "overlay", 0, &opts)
}

fn in_root(p: &str) -> String {
    format!("{NEWROOT}{p}")
}

fn mount_volumes(c: &Cmdline) -> Result<(), Fatal> {
    for v in &c.volumes {
        if !wait_for(|| is_block(&v.device)) {
            return Err(Fatal::new(Status::VolumeMount, format!("volume {} (sm.volume=) is not a block device", v.device)));
        }
        let flags = if v.read_only { libc::MS_RDONLY } else { 0 };
        mount_or(Status::VolumeMount, &v.device, &in_root(&v.target), "ext4", flags, "")?;
    }
    for v in &c.virtiofs {
        let flags = if v.read_only { libc::MS_RDONLY } else { 0 };
        let target = in_root(&v.target);
        std::fs::create_dir_all(&target).map_err(|e| Fatal::new(Status::VolumeMount, format!("{target}: {e}")))?;
        if mount(&v.tag, &target, "virtiofs", flags, "dax").is_err() {
            mount(&v.tag, &target, "virtiofs", flags, "").map_err(|e| Fatal::new(Status::VolumeMount,
                format!("cannot mount virtiofs tag {} on {}: {e}", v.tag, v.target)))?;
        }
    }
    Ok(())
}

fn network(c: &Cmdline) {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd >= 0 {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            ifr.ifr_name[0] = b'l' as libc::c_char;
            ifr.ifr_name[1] = b'o' as libc::c_char;
            if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) == 0 {
                ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
            }
            libc::close(fd);
        }
    }
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0\n");
    if let Some(h) = &c.hostname {
        unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
    }
    let _ = std::fs::create_dir_all(in_root("/etc"));
    if std::fs::symlink_metadata(in_root("/etc/hosts")).is_err() {
        let _ = std::fs::write(in_root("/etc/hosts"), "127.0.0.1 localhost\n::1 localhost\n");
    }
    if c.tsi {
        // supermachine's TSI networking answers DNS here (what the runtime's own init writes).
        let _ = std::fs::remove_file(in_root("/etc/resolv.conf"));
        let _ = std::fs::write(in_root("/etc/resolv.conf"), "nameserver 198.18.0.2\n");
    }
}

/// Makes sure the agent is in the new root: the image's own, else the initramfs's copy
/// (`/supermachine-agent`, the runtime's initramfs layout, or `/.supermachine/agent`).
/// With the default path, an image that only has the runtime's `/supermachine-agent` (its delta
/// layer) uses that one. Returns the agent's path inside the new root.
fn place_agent(agent: &str) -> Result<String, Fatal> {
    let target = in_root(agent);
    if is_exec(&target) {
        return Ok(agent.to_string());
    }
    if agent == supermachine_init::DEFAULT_AGENT_PATH && is_exec(&in_root(runtime::AGENT_PATH)) {
        return Ok(runtime::AGENT_PATH.to_string());
    }
    for src in ["/supermachine-agent", "/.supermachine/agent"] {
        if is_exec(src) {
            let copy = || -> io::Result<()> {
                if let Some(dir) = Path::new(&target).parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let _ = std::fs::remove_file(&target);
                std::fs::copy(src, &target)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            };
            return copy().map(|()| agent.to_string())
                .map_err(|e| Fatal::new(Status::Agent, format!("cannot copy the agent {src} to {agent}: {e}")));
        }
    }
    Err(Fatal::new(Status::Agent, format!("agent {agent} not found in the image or the initramfs (sm.agent=none runs without one)")))
}

fn is_exec(p: &str) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Removes the initramfs contents (frees their memory), staying on its file system.
fn wipe(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.dev() != dev {
            continue;
        }
        if m.is_dir() {
            wipe(&p, dev);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn switch_root() -> Result<(), Fatal> {
    let s = Status::SwitchRoot;
    for d in ["/proc", "/sys", "/dev"] {
        mount_or(s, d, &in_root(d), "", libc::MS_MOVE, "")?;
    }
    mount_or(s, "run", &in_root("/run"), "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, "mode=0755")?;
    let err = |what: &str| Fatal::new(s, format!("{what}: {}", io::Error::last_os_error()));
    unsafe {
        if libc::chdir(cstr(NEWROOT).as_ptr()) != 0 {
            return Err(err("chdir /newroot"));
        }
        let dot = c".";
        if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) == 0 {
            // Not on the initramfs (rootfs cannot be pivoted): drop the old root.
            libc::umount2(dot.as_ptr(), libc::MNT_DETACH);
        } else {
            // switch_root semantics: empty the initramfs, move the new root over it, chroot.
            if let Ok(m) = std::fs::metadata("/") {
                wipe(Path::new("/"), m.dev());
            }
            if libc::mount(dot.as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_MOVE, std::ptr::null()) != 0 {
                return Err(err("mount --move /newroot /"));
            }
            if libc::chroot(dot.as_ptr()) != 0 {
                return Err(err("chroot"));
            }
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(err("chdir /"));
        }
    }
    Ok(())
}

/// A program to start, with everything converted before fork.
struct Spawn {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    ids: Option<Ids>,
    /// stdout/stderr to /dev/null (the runtime's default for the workload).
    quiet: bool,
}

const STAGES: [&str; 6] = ["", "setgroups", "setgid", "setuid", "chdir", "exec"];

/// Forks and execs; the child reports a failed step through a CLOEXEC pipe.
/// Err: (step name, error).
fn spawn(s: &Spawn) -> Result<libc::pid_t, (&'static str, io::Error)> {
    let argv: Vec<*const libc::c_char> = s.argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp: Vec<*const libc::c_char> = s.envp.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let groups: Vec<libc::gid_t> = s.ids.as_ref().map(|i| i.groups.clone()).unwrap_or_default();
    let mut p = [0 as libc::c_int; 2];
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(("pipe", io::Error::last_os_error()));
    }
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = io::Error::last_os_error();
        unsafe { libc::close(p[0]); libc::close(p[1]) };
        return Err(("fork", e));
    }
    if pid == 0 {
        unsafe {
            let report = |stage: u8| -> ! {
                let e = errno();
                let mut msg = [0u8; 5];
                msg[0] = stage;
                msg[1..].copy_from_slice(&e.to_le_bytes());
                libc::write(p[1], msg.as_ptr().cast(), 5);
                libc::_exit(127);
            };
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            for sig in HANDLED {
                libc::signal(sig, libc::SIG_DFL);
            }
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::setsid();
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null > 0 {
                libc::dup2(null, 0);
                if s.quiet {
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                }
                libc::close(null);
            }
            if let Some(ids) = &s.ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                    report(1);
                }
                if libc::setgid(ids.gid) != 0 {
                    report(2);
                }
                if libc::setuid(ids.uid) != 0 {
                    report(3);
                }
            }
            if libc::chdir(s.cwd.as_ptr()) != 0 {
                report(4);
            }
            libc::execve(s.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            report(5);
        }
    }
    unsafe { libc::close(p[1]) };
    let mut msg = [0u8; 5];
    let n = loop {
        let n = unsafe { libc::read(p[0], msg.as_mut_ptr().cast(), 5) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    unsafe { libc::close(p[0]) };
    if n == 5 {
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let e = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
        return Err((STAGES.get(msg[0] as usize).copied().unwrap_or("?"), io::Error::from_raw_os_error(e)));
    }
    Ok(pid)
}

/// The runtime's pause points (`supermachine.kcache=1`, `supermachine.pre_exec_sync=1`): print
/// `[SUPERMACHINE-<what>] ready`, wait up to 30 s for a line on the console (the host pushes
/// `R\n` / `P\n` after its snapshot), print `resumed token=…` or `timeout`.
fn pause_point(what: &str) {
    let line = format!("[SUPERMACHINE-{what}] ready\n");
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    let mut pfd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    let mut tok = [0u8; 16];
    let n = if unsafe { libc::poll(&mut pfd, 1, 30_000) } > 0 {
        unsafe { libc::read(0, tok.as_mut_ptr().cast(), tok.len()) }
    } else {
        -1
    };
    let msg = if n > 0 {
        let t = String::from_utf8_lossy(&tok[..n as usize]).trim_end().to_string();
        format!("[SUPERMACHINE-{what}] resumed token={t}\n")
    } else {
        format!("[SUPERMACHINE-{what}] timeout rn={n} errno={}\n", errno())
    };
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Fetches `{"env":{..},"secrets":{..}}` from the host's vsock port 1026 (the runtime's env
/// service). 1 s to connect, 2 s to read; any failure is a warning and gives no variables.
fn fetch_served_env() -> Vec<String> {
    let fetch = || -> Result<Vec<u8>, String> {
        unsafe {
            let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(format!("socket(AF_VSOCK): {}", io::Error::last_os_error()));
            }
            let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
            let tvp = (&tv as *const libc::timeval).cast();
            let tvl = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            libc::setsockopt(fd, libc::AF_VSOCK, 6 /* SO_VM_SOCKETS_CONNECT_TIMEOUT */, tvp, tvl);
            let rtv = libc::timeval { tv_sec: 2, tv_usec: 0 };
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&rtv as *const libc::timeval).cast(), tvl);
            let mut addr: libc::sockaddr_vm = std::mem::zeroed();
            addr.svm_family = libc::AF_VSOCK as _;
            addr.svm_cid = libc::VMADDR_CID_HOST;
            addr.svm_port = runtime::ENV_PORT;
            if libc::connect(fd, (&addr as *const libc::sockaddr_vm).cast(), std::mem::size_of::<libc::sockaddr_vm>() as _) != 0 {
                let e = io::Error::last_os_error();
                libc::close(fd);
                return Err(format!("connect to host port {}: {e}", runtime::ENV_PORT));
            }
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 || out.len() > (1 << 20) {
                    break;
                }
                out.extend_from_slice(&buf[..n as usize]);
            }
            libc::close(fd);
            Ok(out)
        }
    };
    match fetch().and_then(|b| runtime::parse_env_json(&b)) {
        Ok(env) => env,
        Err(e) => {
            log(&format!("warning: no env from the runtime's env service: {e}"));
            Vec::new()
        }
    }
}

/// `/.supermachine-virtiofs-binds` (root = prefix of the image root). Failures are warnings,
/// as in the runtime's init.
fn mount_delta_binds(root: &str, binds: &[(String, String)]) {
    for (tag, path) in binds {
        let target = format!("{root}{path}");
        let _ = std::fs::create_dir_all(&target);
        match mount(tag, &target, "virtiofs", 0, "") {
            Ok(()) => log(&format!("mounted virtio-fs {tag} -> {path}")),
            Err(e) => log(&format!("warning: mount -t virtiofs {tag} -> {path}: {e}")),
        }
    }
}

/// `/.supermachine-volumes`, after the switch: volume i is the i-th of the last N `/dev/vd?`
/// devices, ext4. Failures are warnings, as in the runtime's init.
fn mount_delta_volumes(volumes: &[String]) {
    if volumes.is_empty() {
        return;
    }
    let devices = (b'a'..=b'z').take_while(|l| is_block(&format!("/dev/vd{}", *l as char))).count();
    match runtime::volume_devices(volumes, devices) {
        Ok(map) => {
            for (dev, path) in map {
                let _ = std::fs::create_dir_all(&path);
                match mount(&dev, &path, "ext4", 0, "") {
                    Ok(()) => log(&format!("mounted {dev} -> {path} (ext4, rw)")),
                    Err(e) => log(&format!("warning: mount {dev} -> {path} ext4: {e}")),
                }
            }
        }
        Err(e) => log(&format!("warning: {e}")),
    }
}

/// Everything up to the supervisor: returns it with both children started.
fn boot() -> Result<Supervisor, Fatal> {
    early_mounts()?;
    let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut c = Cmdline::parse(&text).map_err(|e| Fatal::new(Status::BadCmdline, format!("kernel cmdline: {e}")))?;
    if let Some((s, ns)) = c.host_time {
        set_clock(s, ns);
    }
    if Path::new("/supermachine-smpark.ko").exists() {
        log("ignoring /supermachine-smpark.ko (no modules; vCPU parking is the agent's CPU hotplug)");
    }
    if c.kcache {
        pause_point("KCACHE");
    }
    let layers = find_layers(&c)?;
    mount_rootfs(&layers)?;
    log(&format!("image rootfs: {} (overlay on tmpfs)", layers.join(" + ")));

    // The supermachine runtime's delta-layer files (docs/INIT-OCI.md).
    let delta = DeltaFiles::load(|p| std::fs::read_to_string(in_root(p)).ok())
        .map_err(|e| Fatal::new(Status::BadConfig, e))?;
    let runtime_mode = delta.runtime_mode();
    let served_env = if runtime_mode { fetch_served_env() } else { Vec::new() };
    if c.hostname.is_none() {
        c.hostname = delta.hostname.clone();
    }

    // The process config, checked before anything starts.
    let cfg_file = in_root(&c.config_path);
    let file = match std::fs::read(&cfg_file) {
        Ok(bytes) => Some(ImageConfig::parse(&bytes)
            .map_err(|e| Fatal::new(Status::BadConfig, format!("{}: {e}", c.config_path)))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Fatal::new(Status::BadConfig, format!("cannot read {}: {e}", c.config_path))),
    };
    let image = runtime::layer_config(file, &delta, &served_env);
    let label = if runtime_mode { format!("{} ({})", runtime::CMD_FILE, c.config_path) } else { c.config_path.clone() };
    let mut process = Process::resolve(image.as_ref(), &c.overrides, &label)?;
    let passwd = std::fs::read_to_string(in_root("/etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(in_root("/etc/group")).unwrap_or_default();
    let ids = user::resolve(&process.user, &passwd, &group)
        .map_err(|e| Fatal::new(Status::BadUser, format!("User {:?}: {e}", process.user)))?;
    if get_env(&process.env, "HOME").is_none() {
        process.env.push(format!("HOME={}", ids.home));
    }

    mount_delta_binds(NEWROOT, &delta.virtiofs);
    mount_volumes(&c)?;
    network(&c);
    let agent_path = match &c.agent {
        Some(agent) => Some(place_agent(agent)?),
        None => None,
    };
    switch_root()?;

    // In the image root from here on. The agent first (the runtime's order: it is listening
    // before the heartbeat its snapshot trigger waits for).
    let agent = agent_path.as_ref().map(|a| Spawn {
        path: cstr(a),
        argv: vec![cstr(a)],
        envp: vec![cstr(format!("PATH={}", supermachine_init::DEFAULT_PATH)), cstr("HOME=/root")],
        cwd: cstr("/"),
        ids: None,
        quiet: false,
    });
    let mut sup = Supervisor { workload: None, agent: None, agent_spec: agent, agent_restarts: 0,
                               agent_restart_at: None, stop_deadline: None, cmdline: c };
    if let Some(spec) = &sup.agent_spec {
        let pid = spawn(spec).map_err(|(step, e)| Fatal::new(Status::Agent,
            format!("cannot start the agent {}: {step}: {e}", spec.path.to_string_lossy())))?;
        sup.agent = Some(pid);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) && !Path::new("/run/supermachine-agent-ready").exists() {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    // The runtime's --snapshot-at trigger; its volumes are mounted after it.
    let hb = "[SUPERMACHINE-INIT] heartbeat counter=1\n";
    unsafe { libc::write(1, hb.as_ptr().cast(), hb.len()) };
    mount_delta_volumes(&delta.volumes);

    if !Path::new(&process.cwd).is_dir() {
        std::fs::create_dir_all(&process.cwd)
            .map_err(|e| Fatal::new(Status::BadWorkdir, format!("WorkingDir {}: {e}", process.cwd)))?;
    }
    let argv0 = &process.args[0];
    let path_env = get_env(&process.env, "PATH").unwrap_or(supermachine_init::DEFAULT_PATH);
    let program = find_program(argv0, path_env, |p| {
        let full = if p.starts_with('/') { p.to_string() } else { format!("{}/{p}", process.cwd) };
        is_exec(&full)
    }).ok_or_else(|| Fatal::new(Status::EntrypointExec,
        format!("entrypoint {argv0:?} not found or not executable in the image (PATH={path_env})")))?;
    let quiet = runtime_mode && !runtime::guest_stdio_to_console(get_env(&process.env, "SUPERMACHINE_GUEST_STDIO"));
    let workload = Spawn {
        path: cstr(&program),
        argv: process.args.iter().map(cstr).collect(),
        envp: process.env.iter().map(cstr).collect(),
        cwd: cstr(&process.cwd),
        ids: Some(ids.clone()),
        quiet,
    };
    // The runtime's pre-exec snapshot trigger.
    log("workload-pre-exec");
    if sup.cmdline.pre_exec_sync {
        pause_point("PRE-EXEC");
    } else if runtime_mode {
        std::thread::sleep(Duration::from_millis(250));
    }
    let pid = spawn(&workload).map_err(|(step, e)| {
        let status = if step == "chdir" { Status::BadWorkdir } else { Status::EntrypointExec };
        Fatal::new(status, format!("cannot start entrypoint {program:?}: {step}: {e}"))
    })?;
    sup.workload = Some(pid);
    if let Err(e) = std::fs::write(WORKLOAD_PID_FILE, format!("{pid}\n")) {
        log(&format!("warning: cannot write {WORKLOAD_PID_FILE}: {e}"));
    }
    log(&format!("entrypoint started: pid {pid}, uid {} gid {}, cwd {}{}: {:?}", ids.uid, ids.gid, process.cwd,
                 if quiet { ", stdout/stderr /dev/null (SUPERMACHINE_GUEST_STDIO unset)" } else { "" }, process.args));
    Ok(sup)
}

struct Supervisor {
    workload: Option<libc::pid_t>,
    agent: Option<libc::pid_t>,
    agent_spec: Option<Spawn>,
    agent_restarts: u32,
    agent_restart_at: Option<Instant>,
    stop_deadline: Option<Instant>,
    cmdline: Cmdline,
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended ({status:#x})")
    }
}

impl Supervisor {
    fn run(mut self) -> ! {
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::sigemptyset(&mut set);
            for s in HANDLED {
                libc::sigaddset(&mut set, s);
            }
        }
        loop {
            let ts = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
            let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
            match sig {
                libc::SIGTERM | libc::SIGPWR if self.stop_deadline.is_none() => self.stop(),
                s if FORWARDED.contains(&s) => {
                    if let Some(pid) = self.workload {
                        unsafe { libc::kill(pid, s) };
                    }
                }
                _ => {}
            }
            self.reap();
            if let Some(deadline) = self.stop_deadline {
                if self.workload.is_none() || Instant::now() >= deadline {
                    if let Some(pid) = self.workload {
                        log(&format!("entrypoint pid {pid} still running after {} s; killing it", self.cmdline.stop_timeout_secs));
                    }
                    log("powering off");
                    shutdown(Status::Ok);
                }
            }
            if self.agent_restart_at.is_some_and(|t| Instant::now() >= t) {
                self.agent_restart_at = None;
                if let Some(spec) = &self.agent_spec {
                    match spawn(spec) {
                        Ok(pid) => self.agent = Some(pid),
                        Err((step, e)) => log(&format!("warning: cannot restart the agent: {step}: {e}")),
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        let grace = self.cmdline.stop_timeout_secs;
        self.stop_deadline = Some(Instant::now() + Duration::from_secs(grace as u64));
        match self.workload {
            Some(pid) => {
                log(&format!("SIGTERM: stopping entrypoint pid {pid} (grace {grace} s)"));
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            None => log("SIGTERM: stopping"),
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if Some(pid) == self.workload {
                self.workload = None;
                let _ = std::fs::remove_file(WORKLOAD_PID_FILE);
                log(&format!("entrypoint pid {pid} {}", describe(status)));
                let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                log(&format!("parking PID 1 (exit={code})"));
                if self.cmdline.on_exit == OnExit::Poweroff && self.stop_deadline.is_none() {
                    log("powering off (sm.on_exit=poweroff)");
                    shutdown(Status::Ok);
                }
            } else if Some(pid) == self.agent {
                self.agent = None;
                log(&format!("agent pid {pid} {}", describe(status)));
                if self.stop_deadline.is_none() && self.agent_restarts < 10 {
                    self.agent_restarts += 1;
                    self.agent_restart_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
}
