//! `remove` with `recursive`: stays inside the named tree and on its filesystem.

mod common;

use common::*;
use supermachine_agent_client::Error;
use supermachine_agent_proto::ExecRequest;

fn agent_err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Agent(m)) => m,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

#[test]
#[ignore = "needs root to mount (scripts/test.sh runs it as root)"]
fn recursive_remove_refuses_dotdot_and_keeps_mount_points_as_root() {
    assert!(is_root(), "mounting a tmpfs in the agent's namespace needs root");
    let d = TempDir::new("rmmount");
    // The agent's sandbox has its own mount namespace (unshare --mount-proc): mounts made
    // through it stay there.
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    let c = agent.client();
    let (tree, outside) = (d.s("tree"), d.s("outside"));
    for dir in ["tree/a/b", "tree/bind", "tree/tmpfs", "outside"] {
        std::fs::create_dir_all(d.path(dir)).unwrap();
    }
    std::fs::write(d.path("tree/a/b/f"), b"x").unwrap();
    std::fs::write(d.path("tree/top"), b"x").unwrap();
    std::fs::write(d.path("outside/precious"), b"keep me").unwrap();
    // A bind mount of a folder on the same filesystem (same st_dev) and a tmpfs.
    let script = format!(
        "mount --bind {outside} {tree}/bind && mount -t tmpfs none {tree}/tmpfs && echo inner > {tree}/tmpfs/inner"
    );
    let out = c.exec(&ExecRequest::new(["sh", "-c", &script]), None).unwrap();
    assert_eq!(out.status.code, 0, "{}", String::from_utf8_lossy(&out.stderr));

    // `..` out of the named path, or `.`: refused, nothing removed.
    for p in [format!("{tree}/a/.."), format!("{tree}/a/b/../.."), format!("{tree}/."), format!("{tree}/a/./")] {
        let e = agent_err(c.remove(&p, true));
        assert!(e.contains(&p) && e.contains("`..`"), "{e}");
    }
    assert!(exists(&d.path("tree/a/b/f")) && exists(&d.path("outside/precious")));

    // The tree goes, its mount points and what they hold stay.
    let e = agent_err(c.remove(&tree, true));
    assert!(
        e.contains(&format!("{tree}/bind")) && e.contains(&format!("{tree}/tmpfs")) && e.contains("mount point"),
        "{e}"
    );
    assert_eq!(std::fs::read(d.path("outside/precious")).unwrap(), b"keep me");
    assert!(!exists(&d.path("tree/a")) && !exists(&d.path("tree/top")));
    let out = c.exec(&ExecRequest::new(["cat", &format!("{tree}/tmpfs/inner")]), None).unwrap();
    assert_eq!(out.stdout, b"inner\n");

    // Unmounted, the rest can go.
    let out =
        c.exec(&ExecRequest::new(["sh", "-c", &format!("umount {tree}/bind && umount {tree}/tmpfs")]), None).unwrap();
    assert_eq!(out.status.code, 0);
    c.remove(&tree, true).unwrap();
    assert!(!exists(&d.path("tree")) && exists(&d.path("outside/precious")));
    // Removing / is refused outright.
    assert!(agent_err(c.remove("/", true)).contains("refusing"));
}
