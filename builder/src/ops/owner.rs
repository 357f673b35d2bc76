//! The owner a COPY/ADD `--chown` or a WORKDIR under USER gives, by BuildKit's rules (its
//! `llb.WithUser` and the file op's user lookup), which are not USER's rules for RUN:
//!
//! - a number (or `root`) is the uid, and the gid too when no group follows: `1001` is 1001:1001;
//! - a name is looked up in the image's /etc/passwd: its uid and primary gid, or 0:0 when the
//!   image has no such user (no error);
//! - a group after `:`, a number (or `root`) or a name looked up in /etc/group, replaces the
//!   gid; a group the image does not have leaves the gid as the user part gave it;
//! - an empty user part (`:wheel`) is a name no entry has: uid 0.

/// (uid, gid) for `spec` (`user`, `user:group`) in an image whose account files read
/// `passwd` and `group`.
pub fn owner_ids(spec: &str, passwd: &str, group: &str) -> (u32, u32) {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match id(user) {
        Some(n) => (n, n),
        None => field(passwd, user, &[2, 3]).map_or((0, 0), |f| (f[0], f[1])),
    };
    if let Some(g) = grp {
        if let Some(n) = id(g).or_else(|| field(group, g, &[2]).map(|f| f[0])) {
            gid = n;
        }
    }
    (uid, gid)
}

/// A numeric id as BuildKit parses one (a 32-bit signed integer, `root` is 0).
fn id(s: &str) -> Option<u32> {
    if s == "root" {
        return Some(0);
    }
    // Go's uint32 conversion of a negative int32 wraps the same way.
    s.parse::<i32>().ok().map(|n| n as u32)
}

/// The numeric fields `at` of the line of `file` (passwd or group) whose name is `name`;
/// a field that is not a number reads 0, as the Go parser reads it.
fn field(file: &str, name: &str, at: &[usize]) -> Option<Vec<u32>> {
    let line = file.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f[0] == name && !name.is_empty())?;
    Some(at.iter().map(|&i| line.get(i).and_then(|v| v.trim().parse().ok()).unwrap_or(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nweb:x:33:50::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app\nstaff:x:50:\n";

    #[test]
    fn chown_follows_buildkits_rules_not_users() {
        let cases = [
            ("1001", (1001, 1001)),
            ("33", (33, 33)),
            ("root", (0, 0)),
            ("app", (1000, 1000)),
            ("web", (33, 50)),
            (":wheel", (0, 10)),
            (":7", (0, 7)),
            ("app:wheel", (1000, 10)),
            ("1001:staff", (1001, 50)),
            ("1001:nosuch", (1001, 1001)),
            ("app:nosuch", (1000, 1000)),
            ("nosuch", (0, 0)),
            ("nosuch:5", (0, 5)),
            ("1001:root", (1001, 0)),
        ];
        for (spec, want) in cases {
            assert_eq!(owner_ids(spec, PASSWD, GROUP), want, "{spec}");
        }
        assert_eq!(owner_ids("app", "", ""), (0, 0), "no passwd file: not found");
    }
}
