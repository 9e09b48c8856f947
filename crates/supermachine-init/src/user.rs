//! `User` → uid, gid, supplementary groups and HOME, from the image's /etc/passwd and
//! /etc/group (runc's rules: numeric ids need no entry; names must exist).

/// Resolved ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups (the primary gid first, then /etc/group memberships).
    pub groups: Vec<u32>,
    /// HOME from /etc/passwd (`/` when the user has no entry).
    pub home: String,
}

struct Pw<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Pw<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(Pw { name: f[0], uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5] })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some((f[0], f[2].parse().ok()?, f[3].split(',').filter(|m| !m.is_empty()).collect()))
    })
}

/// Resolves `spec` (`""`, `uid`, `name`, `uid:gid`, `name:group`, …) against the image's
/// passwd and group files (empty strings when the image has none).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|p| p.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|p| p.name == u)
                .ok_or_else(|| format!("user {u:?} not found in the image's /etc/passwd"))?,
        ),
    };
    let uid = match &entry {
        Some(p) => p.uid,
        None => u.parse().map_err(|_| format!("bad user {u:?}"))?,
    };
    let gid = match g {
        None | Some("") => entry.as_ref().map(|p| p.gid).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| format!("group {g:?} not found in the image's /etc/group"))?,
        },
    };
    let mut groups = vec![gid];
    if let Some(p) = &entry {
        for (_, id, members) in group_entries(group) {
            if members.contains(&p.name) && !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    let home = entry.as_ref().map(|p| p.home).filter(|h| !h.is_empty()).unwrap_or("/").to_string();
    Ok(Ids { uid, gid, groups, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nnogroup:x:65534:\n";

    #[test]
    fn root_by_default() {
        assert_eq!(resolve("", PASSWD, GROUP).unwrap(), Ids { uid: 0, gid: 0, groups: vec![0], home: "/root".into() });
        assert_eq!(resolve("", "", "").unwrap(), Ids { uid: 0, gid: 0, groups: vec![0], home: "/".into() });
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            resolve("app", PASSWD, GROUP).unwrap(),
            Ids { uid: 1000, gid: 1000, groups: vec![1000, 10], home: "/home/app".into() }
        );
        assert_eq!(resolve("1000", PASSWD, GROUP).unwrap().groups, vec![1000, 10]);
        assert_eq!(
            resolve("nobody:nogroup", PASSWD, GROUP).unwrap(),
            Ids { uid: 65534, gid: 65534, groups: vec![65534], home: "/".into() }
        );
        assert_eq!(
            resolve("4242:4343", PASSWD, GROUP).unwrap(),
            Ids { uid: 4242, gid: 4343, groups: vec![4343], home: "/".into() }
        );
        assert_eq!(resolve("4242", "", "").unwrap().gid, 0);
        assert_eq!(resolve("app:0", PASSWD, GROUP).unwrap().groups, vec![0, 10]);
    }

    #[test]
    fn unknown_names_fail() {
        assert!(resolve("ghost", PASSWD, GROUP).unwrap_err().contains("\"ghost\" not found"));
        assert!(resolve("0:ghosts", PASSWD, GROUP).unwrap_err().contains("group \"ghosts\""));
        assert!(resolve("app", "", "").is_err());
    }
}
