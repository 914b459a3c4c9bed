//! Who the container's users are: uid/gid maps for the user namespace (subordinate ranges
//! from /etc/subuid and /etc/subgid, or the caller's own id alone), and `USER` specs resolved
//! against the image's /etc/passwd and /etc/group.

use super::RuntimeError;

/// One line of a uid_map or gid_map: `size` ids from `container` map to `host` upwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// How many container ids the namespace should have: 0..65535, as docker and podman give.
pub const WANTED_IDS: u32 = 65536;

/// The maps a container gets, and how they are installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPlan {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
    /// Installed through newuidmap/newgidmap (setuid helpers); otherwise written directly to
    /// /proc/PID/{uid,gid}_map, which an unprivileged caller may do only for its own id.
    pub helpers: bool,
    /// Said to the user when only the caller's id could be mapped.
    pub warning: Option<String>,
}

/// The first subordinate range of `user` (name or numeric id) in an /etc/subuid-style text.
pub fn subordinate_range(text: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let ids = id.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != name && who != ids {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .find(|&(_, count): &(u32, u32)| count > 0)
}

/// Decide the id maps. `euid == 0`: the first 65536 host ids, identically (the namespace
/// still isolates capabilities). Otherwise the caller is container root and its subordinate
/// ranges (if any, and if the setuid helpers exist) give container ids 1..; without them only
/// id 0 exists in the container, which the warning says.
pub fn plan_ids(
    euid: u32,
    egid: u32,
    user: &str,
    subuid: Option<&str>,
    subgid: Option<&str>,
    helpers_present: bool,
) -> IdPlan {
    if euid == 0 {
        let all = vec![IdMap {
            container: 0,
            host: 0,
            size: WANTED_IDS,
        }];
        return IdPlan {
            uids: all.clone(),
            gids: all,
            helpers: false,
            warning: None,
        };
    }
    let own = |id| IdMap {
        container: 0,
        host: id,
        size: 1,
    };
    let ranges = (
        subuid.and_then(|t| subordinate_range(t, user, euid)),
        subgid.and_then(|t| subordinate_range(t, user, euid)),
    );
    match (ranges, helpers_present) {
        ((Some((us, uc)), Some((gs, gc))), true) => {
            let sub = |start, count: u32| IdMap {
                container: 1,
                host: start,
                size: count.min(WANTED_IDS - 1),
            };
            IdPlan {
                uids: vec![own(euid), sub(us, uc)],
                gids: vec![own(egid), sub(gs, gc)],
                helpers: true,
                warning: None,
            }
        }
        ((u, g), helpers) => {
            let why = if !helpers {
                "newuidmap/newgidmap are not installed (Debian package uidmap)".to_string()
            } else if u.is_none() {
                format!("/etc/subuid has no range for {user}")
            } else if g.is_none() {
                format!("/etc/subgid has no range for {user}")
            } else {
                "no subordinate ids".to_string()
            };
            IdPlan {
                uids: vec![own(euid)],
                gids: vec![own(egid)],
                helpers: false,
                warning: Some(format!(
                    "{why}: containers see only uid/gid 0 (your own id); chown to other \
                     users and USER other than root will fail. Add a range, e.g. \
                     `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}`"
                )),
            }
        }
    }
}

/// Text for /proc/PID/uid_map.
pub fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// Arguments for newuidmap/newgidmap after the pid.
pub fn helper_args(maps: &[IdMap]) -> Vec<String> {
    maps.iter()
        .flat_map(|m| [m.container, m.host, m.size])
        .map(|n| n.to_string())
        .collect()
}

/// A process identity inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// The home directory (for HOME), when the user is in /etc/passwd.
    pub home: Option<String>,
}

/// Resolve a `USER` value (`name`, `uid`, `name:group`, `uid:gid`; empty is root) as docker
/// does: names from the image's /etc/passwd and /etc/group, numbers taken as they are, and
/// the supplementary groups of a named user from /etc/group.
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Identity, RuntimeError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "root" } else { user };
    let entry = passwd.and_then(|t| {
        t.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let matches = f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user);
            if !matches {
                return None;
            }
            Some((
                f[0].to_string(),
                f[2].parse::<u32>().ok()?,
                f[3].parse::<u32>().ok()?,
                f.get(5).map(|s| s.to_string()),
            ))
        })
    });
    let (name, uid, mut gid, home) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => e,
        (None, Ok(n)) => (String::new(), n, 0, None),
        (None, Err(_)) if user == "root" => ("root".into(), 0, 0, None),
        (None, Err(_)) => {
            return Err(RuntimeError::User(format!(
                "unable to find user {user}: no matching entries in passwd file"
            )))
        }
    };
    let groups_of = |t: &str| -> Vec<(String, u32, Vec<String>)> {
        t.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 3 {
                    return None;
                }
                let members = f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                Some((f[0].to_string(), f[2].parse().ok()?, members))
            })
            .collect()
    };
    let table = group.map(groups_of).unwrap_or_default();
    if let Some(g) = grp {
        gid = match (table.iter().find(|(n, _, _)| n == g), g.parse::<u32>()) {
            (Some((_, id, _)), _) => *id,
            (None, Ok(n)) => n,
            (None, Err(_)) => {
                return Err(RuntimeError::User(format!(
                    "unable to find group {g}: no matching entries in group file"
                )))
            }
        };
    }
    // An explicit group replaces the supplementary ones, as docker does.
    let mut groups = Vec::new();
    if grp.is_none() && !name.is_empty() {
        for (_, id, members) in &table {
            if members.contains(&name) && !groups.contains(id) && *id != gid {
                groups.push(*id);
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "# comment\nother:100000:65536\nkilntest:200000:65536\n";

    #[test]
    fn subordinate_range_by_name_or_id() {
        assert_eq!(
            subordinate_range(SUB, "kilntest", 1001),
            Some((200000, 65536))
        );
        assert_eq!(
            subordinate_range("1001:300000:10\n", "x", 1001),
            Some((300000, 10))
        );
        assert_eq!(subordinate_range(SUB, "nobody", 5), None);
        assert_eq!(subordinate_range("bad line\nx:1\n", "x", 5), None);
    }

    #[test]
    fn root_maps_identically() {
        let p = plan_ids(0, 0, "root", None, None, false);
        assert_eq!(
            p.uids,
            vec![IdMap {
                container: 0,
                host: 0,
                size: 65536
            }]
        );
        assert!(p.warning.is_none() && !p.helpers);
    }

    #[test]
    fn rootless_uses_subordinate_ranges() {
        let p = plan_ids(1001, 1002, "kilntest", Some(SUB), Some(SUB), true);
        assert!(p.helpers && p.warning.is_none());
        assert_eq!(
            helper_args(&p.uids),
            ["0", "1001", "1", "1", "200000", "65535"]
        );
        assert_eq!(map_text(&p.gids), "0 1002 1\n1 200000 65535\n");
    }

    #[test]
    fn rootless_falls_back_with_a_warning() {
        let p = plan_ids(1001, 1001, "kilntest", Some(SUB), Some(SUB), false);
        assert_eq!(p.uids.len(), 1);
        assert!(p.warning.as_deref().is_some_and(|w| w.contains("uidmap")));
        let p = plan_ids(1001, 1001, "nobody", Some(SUB), Some(SUB), true);
        assert!(p
            .warning
            .as_deref()
            .is_some_and(|w| w.contains("/etc/subuid")));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:50:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\nwheel:x:10:app,root\ndocker:x:999:app\n";

    #[test]
    fn users_resolve_like_docker() {
        let r = |s| resolve_user(s, Some(PASSWD), Some(GROUP));
        let app = r("app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.groups.clone()),
            (1000, 50, vec![10, 999])
        );
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        assert_eq!(r("").unwrap().uid, 0);
        let n = r("1000:50").unwrap();
        assert_eq!((n.uid, n.gid, n.groups.len()), (1000, 50, 0));
        assert_eq!(
            r("4242").unwrap(),
            Identity {
                uid: 4242,
                ..Default::default()
            }
        );
        assert_eq!(r("app:wheel").unwrap().gid, 10);
        assert!(r("ghost").is_err());
        assert!(r("app:ghosts").is_err());
        assert_eq!(resolve_user("root", None, None).unwrap().uid, 0);
    }
}
