//! Boot profiling: an instrumented copy of the supermachine `/init` (every step writes a marker
//! to `/dev/kmsg`, so it gets a printk timestamp) and the parser that turns the guest's `dmesg`
//! (booted with `initcall_debug printk.time=1`) plus a few host-side times into a timeline of
//! named phases from QEMU launch to the first exec answered. `bin/boot-profile.rs` drives it;
//! `scripts/boot-profile.sh` is the command; docs/BOOT-PROFILE.md explains the figures.

use crate::cpio::Archive;
use crate::initramfs::{init_script, Options};

/// Prefix of every marker record.
pub const MARK: &str = "smprof:";

/// Marker names of the instrumented `/init`, in order, each with the line of the generated
/// script it is inserted before. A step lasts from its marker to the next one.
pub const INIT_STEPS: &[(&str, &str)] = &[
    ("busybox-install", "/bin/busybox --install -s /bin"),
    ("mount-proc-dev-sys", "mount -t proc proc /proc"),
    ("cmdline-clock", "for tok in $(cat /proc/cmdline); do"),
    ("net-lo", "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start"),
    ("dev-shm-links", "mkdir -p /dev/shm /dev/pts"),
    ("squashfs-layers", "n=0; lower="),
    ("overlay", "mkdir -p /ov /newroot"),
    ("etc-files", "mkdir -p /newroot/etc"),
    ("volumes", "for v in $volumes; do"),
    ("copy-agent-busybox", "mkdir -p /newroot/.supermachine "),
    ("launch-script", "cat > /newroot/.supermachine/launch <<'LAUNCH'"),
    ("move-mounts", "mount --move /proc /newroot/proc"),
    ("switch-root", "exec switch_root /newroot /.supermachine/launch"),
];

/// Path of the optional counter helper in the initramfs (see `scripts/boot-profile/clk.c`).
pub const CLK_PATH: &str = "smprof-clk";

fn mark_line(name: &str) -> String {
    // Level 3 so that the line also reaches the console under `quiet` (the host stamps it).
    format!("echo '<3>{MARK} {name}' > /dev/kmsg\n")
}

/// The generated `/init` with markers: `init-start` first (then the counter helper, if any),
/// one before each of [`INIT_STEPS`], `launch-start` and `agent-exec` in the launch script, and
/// the agent's stderr sent to `/dev/kmsg` so its "listening" line is timestamped too.
pub fn traced_init_script(opts: &Options, clk: bool) -> String {
    traced_init_script_with(opts, clk, None)
}

/// [`traced_init_script`], plus (diagnostics only, not the runtime's flow) a shell command run as
/// its own step, `probe-step`, just before the mounts are moved into the new root (e.g.
/// `chroot /newroot /bin/sh -c true`: the first exec of an image binary, without the agent).
pub fn traced_init_script_with(opts: &Options, clk: bool, probe: Option<&str>) -> String {
    let plain = init_script(opts);
    let mut out = String::new();
    let mut lines = plain.lines();
    let shebang = lines.next().unwrap_or("#!/bin/busybox sh");
    out.push_str(shebang);
    out.push('\n');
    out.push_str(&mark_line("init-start"));
    if clk {
        out.push_str(&format!("/{CLK_PATH}\n"));
    }
    let mut in_launch = false;
    for l in lines {
        if in_launch && l.starts_with("#!/.supermachine/busybox sh") {
            out.push_str(l);
            out.push('\n');
            out.push_str(&mark_line("launch-start"));
            continue;
        }
        if in_launch && l.starts_with("exec /.supermachine/agent") {
            out.push_str(&mark_line("agent-exec"));
            out.push_str(l.trim_end());
            out.push_str(" 2>/dev/kmsg\n");
            continue;
        }
        if l == "LAUNCH" {
            in_launch = false;
        }
        if let Some((name, _)) = INIT_STEPS.iter().find(|(_, p)| l.starts_with(p)) {
            if let (Some(cmd), true) = (probe, *name == "move-mounts") {
                out.push_str(&mark_line("probe-step"));
                out.push_str(cmd);
                out.push('\n');
            }
            out.push_str(&mark_line(name));
        }
        if l.starts_with("cat > /newroot/.supermachine/launch") {
            in_launch = true;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The supermachine initramfs with the traced `/init`, a `/dev/kmsg` node (markers are written
/// before devtmpfs is mounted) and, if given, the counter helper.
pub fn traced_initramfs(
    busybox: &[u8],
    agent: &[u8],
    opts: &Options,
    clk: Option<&[u8]>,
    probe: Option<&str>,
) -> Vec<u8> {
    let mut a = Archive::new();
    for d in ["bin", "proc", "dev", "sys", "modules"] {
        a.dir(d, 0o755);
    }
    a.char_dev("dev/kmsg", 0o644, 1, 11);
    a.file("bin/busybox", 0o755, busybox).file("supermachine-agent", 0o755, agent);
    if let Some(c) = clk {
        a.file(CLK_PATH, 0o755, c);
    }
    a.file("init", 0o755, traced_init_script_with(opts, clk.is_some(), probe).as_bytes());
    a.finish()
}

/// One printk record: seconds since the printk clock started, and the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub t: f64,
    pub text: String,
}

/// Parses `dmesg` output (`[    1.234567] text`); lines without a timestamp are skipped.
pub fn parse_dmesg(s: &str) -> Vec<Record> {
    s.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix('[')?;
            let (ts, text) = rest.split_once(']')?;
            Some(Record { t: ts.trim().parse().ok()?, text: text.strip_prefix(' ').unwrap_or(text).to_string() })
        })
        .collect()
}

/// One initcall from `initcall_debug`.
#[derive(Debug, Clone, PartialEq)]
pub struct Initcall {
    /// Function, without the `+0x…/0x…` suffix.
    pub name: String,
    /// printk time of its "calling" line (s).
    pub start: f64,
    /// Duration from the printk times of its "calling" and "returned" lines (µs). The kernel's
    /// own "after N usecs" uses ktime, which is jiffies-grained until the clocksource switch.
    pub usecs: u64,
    /// The kernel's own figure ("after N usecs").
    pub reported_usecs: u64,
}

/// Initcalls in the order they returned.
pub fn initcalls(recs: &[Record]) -> Vec<Initcall> {
    let mut started: Vec<(String, f64)> = Vec::new();
    let mut out = Vec::new();
    for r in recs {
        if let Some(rest) = r.text.strip_prefix("calling  ").or_else(|| r.text.strip_prefix("calling ")) {
            let f = rest.split_whitespace().next().unwrap_or("");
            started.push((fn_name(f), r.t));
        } else if let Some(rest) = r.text.strip_prefix("initcall ") {
            let mut w = rest.split_whitespace();
            let f = fn_name(w.next().unwrap_or(""));
            let usecs = rest.split(" after ").nth(1).and_then(|x| x.split_whitespace().next()?.parse().ok());
            if let Some(reported_usecs) = usecs {
                let start = started.iter().rev().find(|(n, _)| *n == f).map(|(_, t)| *t).unwrap_or(r.t);
                let usecs = ((r.t - start) * 1e6).round().max(0.0) as u64;
                out.push(Initcall { name: f, start, usecs, reported_usecs });
            }
        }
    }
    out
}

fn fn_name(s: &str) -> String {
    s.split('+').next().unwrap_or(s).to_string()
}

/// Host-side inputs of a timeline.
#[derive(Debug, Clone, Default)]
pub struct HostTimes {
    /// Guest time (ms since its first instruction) of the counter helper's record, from the raw
    /// counter it printed: under `-icount` this anchors the printk clock (icount mode).
    pub clk_virtual_ms: Option<f64>,
    /// Host time (ms since QEMU launch) the `init-start` console line arrived (wall mode anchor).
    pub init_start_host_ms: Option<f64>,
    /// Host time (ms since launch) the first exec was answered (wall mode end).
    pub first_exec_host_ms: Option<f64>,
}

/// A timeline: named events (ms since launch / first guest instruction) and the phases between.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub events: Vec<(String, f64)>,
    pub phases: Vec<(String, f64)>,
    pub initcalls: Vec<Initcall>,
    /// Other printk lines worth seeing (entropy, initramfs unpacking, …) with times in ms.
    pub notes: Vec<(String, f64)>,
}

/// Phase names, in order (a phase is named after the event it starts at; see [`build`]).
pub fn phase_name(event: &str) -> String {
    match event {
        "launch" => "VMM + firmware + decompression + early setup (before the printk clock)".into(),
        "clock" => "early kernel (printk clock → first initcall)".into(),
        "first-initcall" => "initcalls".into(),
        "last-initcall" => "kernel: last initcall → /init (initramfs, free init mem, exec sh)".into(),
        "init-start" => "init: profiler counter read (not in the runtime)".into(),
        "switch-root" => "init: switch_root → launch script".into(),
        "launch-start" => "launch script → exec agent".into(),
        "agent-exec" => "agent start → listening".into(),
        "agent-listening" => "listening → first exec answered".into(),
        "probe-step" => "init: probe-step (diagnostic, not in the runtime)".into(),
        s => format!("init: {s}"),
    }
}

/// Builds the timeline. `icount`: times come from the printk clock anchored by the counter
/// helper (all guest-virtual, including the first exec, whose command writes a marker); else the
/// printk clock is anchored by the host arrival of the `init-start` console line and the end is
/// the host's time of the first answer.
pub fn build(recs: &[Record], host: &HostTimes, icount: bool) -> Result<Timeline, String> {
    let find = |name: &str| -> Option<f64> {
        let want = format!("{MARK} {name}");
        recs.iter().find(|r| r.text.trim_end() == want).map(|r| r.t * 1000.0)
    };
    let init_start = find("init-start").ok_or("no init-start marker in dmesg")?;
    let offset = if icount {
        let clk = recs.iter().find(|r| r.text.starts_with(&format!("{MARK} clk "))).ok_or("no clk record in dmesg")?;
        host.clk_virtual_ms.ok_or("no counter value")? - clk.t * 1000.0
    } else {
        host.init_start_host_ms.ok_or("init-start line not seen on the console")? - init_start
    };
    let ic = initcalls(recs);
    let run_init = recs.iter().find(|r| r.text.starts_with("Run /init")).map(|r| r.t * 1000.0);
    let before_init: Vec<&Initcall> = ic.iter().filter(|c| run_init.is_none_or(|t| c.start * 1000.0 <= t)).collect();
    let mut ev: Vec<(String, f64)> = vec![("launch".into(), 0.0), ("clock".into(), offset)];
    if let (Some(first), Some(last)) = (before_init.first(), before_init.last()) {
        ev.push(("first-initcall".into(), offset + first.start * 1000.0));
        ev.push(("last-initcall".into(), offset + (last.start * 1000.0 + last.usecs as f64 / 1000.0)));
    }
    ev.push(("init-start".into(), offset + init_start));
    let mut names: Vec<&str> = INIT_STEPS.iter().map(|(n, _)| *n).collect();
    if find("probe-step").is_some() {
        let at = names.iter().position(|n| *n == "move-mounts").unwrap_or(names.len());
        names.insert(at, "probe-step");
    }
    names.extend(["launch-start", "agent-exec"]);
    for n in names {
        let t = find(n).ok_or_else(|| format!("no {n} marker in dmesg"))?;
        ev.push((n.to_string(), offset + t));
    }
    let agent_exec = find("agent-exec").unwrap();
    let listening = recs
        .iter()
        .find(|r| r.t * 1000.0 >= agent_exec && r.text.contains("listening"))
        .ok_or("no agent 'listening' line in dmesg")?;
    ev.push(("agent-listening".into(), offset + listening.t * 1000.0));
    let end = if icount {
        offset + find("first-exec").ok_or("no first-exec marker in dmesg")?
    } else {
        host.first_exec_host_ms.ok_or("no first exec time")?
    };
    ev.push(("first-exec".into(), end));
    let phases = ev.windows(2).map(|w| (phase_name(&w[0].0), w[1].1 - w[0].1)).collect();
    let notes = recs
        .iter()
        .filter(|r| {
            [
                "crng init",
                "Trying to unpack",
                "Freeing initrd",
                "Freeing unused kernel",
                "Run /init",
                "random:",
                "clocksource: Switched",
                "virtio_blk",
                "squashfs",
                "overlayfs",
            ]
            .iter()
            .any(|k| r.text.contains(k))
        })
        .map(|r| (r.text.clone(), offset + r.t * 1000.0))
        .collect();
    Ok(Timeline { events: ev, phases, initcalls: ic, notes })
}

/// Parses the counter helper's record `smprof: clk COUNT FREQ` into ms since the counter
/// started; `FREQ` 0 means 1 GHz (x86 TSC under `-icount shift=0`).
pub fn clk_ms(recs: &[Record]) -> Option<f64> {
    let r = recs.iter().find(|r| r.text.starts_with(&format!("{MARK} clk ")))?;
    let mut w = r.text.split_whitespace().skip(2);
    let count: f64 = w.next()?.parse().ok()?;
    let freq: f64 = w.next()?.parse().ok()?;
    let hz = if freq == 0.0 { 1e9 } else { freq };
    Some(count / hz * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DMESG: &str = "\
[    0.000000] Linux version 6.x
[    0.010000] calling  init_a+0x0/0x20 @ 1
[    0.010500] initcall init_a+0x0/0x20 returned 0 after 0 usecs
[    0.011000] calling  slow_probe+0x0/0x40 @ 1
[    0.031000] initcall slow_probe+0x0/0x40 returned 0 after 20000 usecs
[    0.040000] Run /init as init process
[    0.050000] smprof: init-start
[    0.050500] smprof: clk 150500000 0
[    0.051000] smprof: busybox-install
[    0.052000] smprof: mount-proc-dev-sys
[    0.053000] smprof: cmdline-clock
[    0.054000] smprof: net-lo
[    0.055000] smprof: dev-shm-links
[    0.056000] smprof: squashfs-layers
[    0.057000] smprof: overlay
[    0.058000] smprof: etc-files
[    0.059000] smprof: volumes
[    0.060000] smprof: copy-agent-busybox
[    0.061000] smprof: launch-script
[    0.062000] smprof: move-mounts
[    0.063000] smprof: switch-root
[    0.064000] smprof: launch-start
[    0.065000] smprof: agent-exec
[    0.070000] supermachine-agent: listening on AF_VSOCK port 1028 (protocol 5)
[    0.080000] smprof: first-exec
";

    #[test]
    fn icount_timeline_is_anchored_by_the_counter() {
        let recs = parse_dmesg(DMESG);
        let host = HostTimes { clk_virtual_ms: clk_ms(&recs), ..Default::default() };
        assert_eq!(host.clk_virtual_ms, Some(150.5));
        let t = build(&recs, &host, true).unwrap();
        // clk record at printk 50.5 ms = 150.5 ms virtual: the printk clock started at 100 ms.
        assert_eq!(t.events[1], ("clock".into(), 100.0));
        let ev = |n: &str| t.events.iter().find(|e| e.0 == n).unwrap().1;
        assert!((ev("first-initcall") - 110.0).abs() < 1e-9);
        assert!((ev("last-initcall") - 131.0).abs() < 1e-9);
        assert!((ev("agent-listening") - 170.0).abs() < 1e-9);
        assert!((ev("first-exec") - 180.0).abs() < 1e-9);
        let total: f64 = t.phases.iter().map(|p| p.1).sum();
        assert!((total - 180.0).abs() < 1e-9, "phases add up to the end: {total}");
        assert_eq!(t.initcalls.len(), 2);
        assert_eq!(
            t.initcalls[1],
            Initcall { name: "slow_probe".into(), start: 0.011, usecs: 20000, reported_usecs: 20000 }
        );
        assert_eq!(t.phases.len(), t.events.len() - 1);
    }

    #[test]
    fn wall_timeline_uses_host_anchor_and_end() {
        let recs = parse_dmesg(DMESG);
        let host = HostTimes { init_start_host_ms: Some(500.0), first_exec_host_ms: Some(600.0), ..Default::default() };
        let t = build(&recs, &host, false).unwrap();
        assert!((t.events[1].1 - 450.0).abs() < 1e-9);
        assert_eq!(t.events.last().unwrap(), &("first-exec".to_string(), 600.0));
        assert!(build(&recs, &HostTimes::default(), false).is_err());
    }

    #[test]
    fn every_step_marker_is_inserted_once() {
        let s = traced_init_script(&Options::default(), true);
        for (n, _) in INIT_STEPS {
            assert_eq!(s.matches(&format!("{MARK} {n}'")).count(), 1, "{n}:\n{s}");
        }
        for n in ["init-start", "launch-start", "agent-exec"] {
            assert_eq!(s.matches(&format!("{MARK} {n}'")).count(), 1, "{n}");
        }
        assert!(
            s.contains("exec /.supermachine/agent  2>/dev/kmsg") || s.contains("exec /.supermachine/agent 2>/dev/kmsg"),
            "{s}"
        );
        assert!(s.contains(&format!("/{CLK_PATH}\n")));
        let p = traced_init_script_with(&Options::default(), false, Some("chroot /newroot /bin/sh -c true"));
        let i = p.find("chroot /newroot").unwrap();
        assert!(p[..i].ends_with(&mark_line("probe-step")) && p[i..].contains("mount --move /proc"), "{p}");
        // Same script otherwise: dropping marker lines gives back the original.
        let stripped: String = s
            .lines()
            .filter(|l| !l.contains(MARK) && *l != format!("/{CLK_PATH}"))
            .map(|l| format!("{}\n", l.replace(" 2>/dev/kmsg", "")))
            .collect();
        let orig: String = init_script(&Options::default()).lines().map(|l| format!("{}\n", l.trim_end())).collect();
        let stripped: String = stripped.lines().map(|l| format!("{}\n", l.trim_end())).collect();
        assert_eq!(stripped, orig);
    }
}
