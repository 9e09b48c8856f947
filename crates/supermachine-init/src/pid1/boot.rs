//! Everything from the kernel's hand-over to the supervisor, in order.

use super::layers::{find_layers, mount_rootfs};
use super::mounts::{
    early_mounts, mount_delta_binds, mount_delta_volumes, mount_scratch_dirs, mount_volumes, switch_root,
};
use super::runtime_io::{fetch_served_env, network, pause_point, set_clock};
use super::spawn::{is_exec, place_agent, spawn, Spawn};
use super::supervise::Supervisor;
use super::{cstr, in_root, NEWROOT};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};
use supermachine_guest_sys::path::{find_program, DEFAULT_PATH};
use supermachine_init::cmdline::Cmdline;
use supermachine_init::config::ImageConfig;
use supermachine_init::process::{get_env, Process};
use supermachine_init::runtime::{self, DeltaFiles};
use supermachine_init::user;
use supermachine_init::{Fatal, Status, WORKLOAD_PID_FILE};

/// Everything up to the supervisor: returns it with both children started.
pub fn boot() -> Result<Supervisor, Fatal> {
    early_mounts()?;
    let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut c = Cmdline::parse(&text).map_err(|e| Fatal::new(Status::BadCmdline, format!("kernel cmdline: {e}")))?;
    if let Some((s, ns)) = c.host_time {
        set_clock(s, ns);
    }
    // smpark is built into our kernel: a /supermachine-smpark.ko in the initramfs is ignored.
    announce_smpark();
    if c.kcache {
        pause_point("KCACHE");
    }
    let layers = find_layers(&c)?;
    mount_rootfs(&layers)?;
    log!("image rootfs: {} (overlay on tmpfs)", layers.join(" + "));

    // The supermachine runtime's delta-layer files (docs/INIT-OCI.md).
    let delta =
        DeltaFiles::load(|p| std::fs::read_to_string(in_root(p)).ok()).map_err(|e| Fatal::new(Status::BadConfig, e))?;
    let runtime_mode = delta.runtime_mode();
    let served_env = if runtime_mode { fetch_served_env() } else { Vec::new() };
    if c.hostname.is_none() {
        c.hostname = delta.hostname.clone();
    }

    // The process config, checked before anything starts.
    let cfg_file = in_root(&c.config_path);
    let file = match std::fs::read(&cfg_file) {
        Ok(bytes) => Some(
            ImageConfig::parse(&bytes).map_err(|e| Fatal::new(Status::BadConfig, format!("{}: {e}", c.config_path)))?,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Fatal::new(Status::BadConfig, format!("cannot read {}: {e}", c.config_path))),
    };
    let mut image = runtime::layer_config(file, &delta, &served_env);
    if runtime_mode {
        runtime::default_shell(&mut image);
    }
    let label = if runtime_mode { format!("{} ({})", runtime::CMD_FILE, c.config_path) } else { c.config_path.clone() };
    let mut process = Process::resolve(image.as_ref(), &c.overrides, &label)?;
    let passwd = std::fs::read_to_string(in_root("/etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(in_root("/etc/group")).unwrap_or_default();
    // In the runtime's mode a workload that cannot start ends as the runtime's init ends it (exit
    // 126 for its user, 127 for its program) while PID 1 and the agent stay up for execs;
    // elsewhere the boot fails with a status.
    let mut cannot_start: Option<(i32, String)> = None;
    let ids = match user::resolve(&process.user, &passwd, &group) {
        Ok(ids) => Some(ids),
        Err(e) if runtime_mode => {
            cannot_start = Some((126, format!("unknown user {:?}: {e}", process.user)));
            None
        }
        Err(e) => return Err(Fatal::new(Status::BadUser, format!("User {:?}: {e}", process.user))),
    };
    if runtime_mode && get_env(&process.env, runtime::KCACHE_DONE_VAR).is_none() {
        // PID 1's environment in the runtime's init (it re-execs itself with it): every process
        // it starts inherits it.
        process.env.push(format!("{}=1", runtime::KCACHE_DONE_VAR));
    }
    // The agent gets the workload's environment (image Env, the runtime's served env and
    // secrets), as the runtime's init hands PID 1's to its agent: every exec sees it. Its HOME is
    // root's unless the environment names one; the workload's comes from its user.
    let mut agent_env = process.env.clone();
    if get_env(&agent_env, "HOME").is_none() {
        agent_env.push("HOME=/root".into());
    }
    if let (None, Some(ids)) = (get_env(&process.env, "HOME"), &ids) {
        process.env.push(format!("HOME={}", ids.home));
    }

    mount_volumes(&c)?;
    network(&c);
    let agent_path = match c.agent.as_deref().map(place_agent) {
        Some(Ok(path)) => Some(path),
        Some(Err(f)) if runtime_mode => {
            log!("exec-agent: {}: exec disabled", f.msg);
            None
        }
        Some(Err(f)) => return Err(f),
        None => None,
    };
    mount_scratch_dirs()?;
    mount_delta_binds(NEWROOT, &delta.virtiofs);
    switch_root()?;
    // Rosetta's `HOME=/root` (the runtime's init sets it for the translator) needs nothing here:
    // the agent's environment always names a HOME, the workload's its user's.
    super::rosetta::setup();

    // In the image root from here on. The agent first (the runtime's order: it is listening
    // before the heartbeat its snapshot trigger waits for).
    let agent = agent_path.as_ref().map(|a| Spawn {
        path: cstr(a),
        argv: vec![cstr(a)],
        envp: agent_env.iter().map(|e| cstr(e)).collect(),
        cwd: cstr("/"),
        ids: None,
        quiet: false,
        console_stdin: false,
    });
    let mut sup = Supervisor::new(agent, c, runtime_mode);
    if let Some(spec) = &sup.agent_spec {
        let pid = spawn(spec).map_err(|e| {
            Fatal::new(
                Status::Agent,
                format!("cannot start the agent {}: {}: {}", spec.path.to_string_lossy(), e.step, e.err),
            )
        })?;
        sup.agent = Some(pid);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) && !Path::new("/run/supermachine-agent-ready").exists() {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    // The runtime's --snapshot-at trigger; its volumes are mounted after it.
    let hb = "[SUPERMACHINE-INIT] heartbeat counter=1\n";
    // SAFETY: writes `hb.len()` bytes from `hb` to stdout.
    unsafe { libc::write(1, hb.as_ptr().cast(), hb.len()) };
    mount_delta_volumes(&delta.volumes);

    if !Path::new(&process.cwd).is_dir() {
        if runtime_mode {
            // The runtime's init logs a failed chdir and runs the workload in `/`.
            log!("chdir({}): not a directory in the image; the workload runs in /", process.cwd);
            process.cwd = "/".into();
        } else {
            std::fs::create_dir_all(&process.cwd)
                .map_err(|e| Fatal::new(Status::BadWorkdir, format!("WorkingDir {}: {e}", process.cwd)))?;
        }
    }
    let argv0 = &process.args[0];
    let path_env = get_env(&process.env, "PATH").unwrap_or(DEFAULT_PATH);
    let program = find_program(argv0, path_env, |p| {
        let full = if p.starts_with('/') { p.to_string() } else { format!("{}/{p}", process.cwd) };
        is_exec(&full)
    });
    let not_found = || format!("entrypoint {argv0:?} not found or not executable in the image (PATH={path_env})");
    let program = match program {
        Some(p) => p,
        None if runtime_mode => {
            cannot_start.get_or_insert_with(|| (127, not_found()));
            String::new()
        }
        None => return Err(Fatal::new(Status::EntrypointExec, not_found())),
    };
    let quiet = runtime_mode && !runtime::guest_stdio_to_console(get_env(&process.env, "SUPERMACHINE_GUEST_STDIO"));
    let workload = Spawn {
        path: cstr(&program),
        argv: process.args.iter().map(|a| cstr(a)).collect(),
        envp: process.env.iter().map(|e| cstr(e)).collect(),
        cwd: cstr(&process.cwd),
        ids: ids.clone(),
        quiet,
        // The runtime's init gives a workload whose output goes to the console the console as
        // stdin too.
        console_stdin: runtime_mode && !quiet,
    };
    // The runtime's pre-exec snapshot trigger.
    log!("workload-pre-exec");
    if sup.cmdline.pre_exec_sync {
        pause_point("PRE-EXEC");
    } else if runtime_mode {
        std::thread::sleep(Duration::from_millis(250));
    }
    if let Some((code, why)) = cannot_start {
        log!("error: {why}");
        sup.workload_ended(code);
        return Ok(sup);
    }
    let pid = match spawn(&workload) {
        Ok(pid) => pid,
        Err(e) => {
            let why = format!("cannot start entrypoint {program:?}: {}: {}", e.step, e.err);
            if runtime_mode {
                log!("error: {why}");
                sup.workload_ended(127);
                return Ok(sup);
            }
            let status = if e.step == "chdir" { Status::BadWorkdir } else { Status::EntrypointExec };
            return Err(Fatal::new(status, why));
        }
    };
    sup.workload = Some(pid);
    if let Err(e) = std::fs::write(WORKLOAD_PID_FILE, format!("{pid}\n")) {
        log!("warning: cannot write {WORKLOAD_PID_FILE}: {e}");
    }
    let (uid, gid) = ids.as_ref().map_or((0, 0), |i| (i.uid, i.gid));
    log!(
        "entrypoint started: pid {pid}, uid {uid} gid {gid}, cwd {}{}: {:?}",
        process.cwd,
        if quiet { ", stdout/stderr /dev/null (SUPERMACHINE_GUEST_STDIO unset)" } else { "" },
        process.args
    );
    Ok(sup)
}

/// Where the smpark driver publishes its state page (kernel-patches/aarch64/0002-smpark).
const SMPARK_GPA_FILE: &str = "/sys/kernel/smpark/state_gpa";

/// The line the runtime's serial scanner takes the state page's address from, for its direct
/// unpark (`SMPARK_UNPARK_DIRECT`): printed as the published init-oci prints it, when the
/// kernel has smpark.
fn announce_smpark() {
    if let Ok(gpa) = std::fs::read_to_string(SMPARK_GPA_FILE) {
        let gpa = gpa.trim_end();
        if gpa.starts_with("0x") {
            eprintln!("[SUPERMACHINE-SMPARK] state_gpa={gpa}");
        }
    }
}
