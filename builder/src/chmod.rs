//! `COPY --chmod` and `ADD --chmod` modes: octal (`755`) or symbolic (`u=rwx,go=rx`, `a+x`,
//! `g-w`, `+X`, `g=u`), taken as chmod(1) on Linux and BuildKit take them.
//!
//! An octal mode replaces each copied entry's permissions. A symbolic mode is a list of
//! comma-separated clauses applied in order to each entry's own mode, so `go-w` keeps
//! whatever else a file had, and `X` adds execute only to directories and to files that
//! were executable for someone. As in BuildKit (which parses with a umask of 0), a clause
//! without a `who` (`+x`) affects everyone, like `a+x`.
//!
//! ```
//! use builder::chmod::Chmod;
//! let m: Chmod = "u=rwX,go=rX".parse().map_err(|e: String| e)?;
//! assert_eq!(m.apply(0o600, true), 0o755); // a directory
//! assert_eq!(m.apply(0o600, false), 0o644); // a plain file
//! assert_eq!(m.apply(0o700, false), 0o755); // an executable file
//! assert_eq!("755".parse::<Chmod>()?.apply(0o600, false), 0o755);
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::str::FromStr;

/// Every permission bit a mode can hold: set-uid, set-gid, sticky and rwx for u, g, o.
const ALL: u32 = 0o7777;

/// A `--chmod` value: what to do to each copied file's and directory's permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An absolute mode (`755`, `0644`): every entry gets exactly these bits.
    Octal(u32),
    /// Clauses applied in order to each entry's own mode.
    Symbolic {
        /// The value as written, for the cache key and messages.
        text: String,
        /// The parsed clauses.
        clauses: Vec<Clause>,
    },
}

/// One comma-separated part of a symbolic mode: whom it affects and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The bits the clause may touch (`u` is 0o4700, `g` 0o2070, `o` 0o1007, `a` all).
    who: u32,
    /// The operations, in order (`u+x-w` has two).
    actions: Vec<Action>,
}

/// `+`, `-` or `=` with what it adds, removes or sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Action {
    op: Op,
    perm: Perm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Set,
}

/// The right-hand side of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    /// Letters from `rwxXst`: fixed bits, plus execute when `X` applies.
    Bits { bits: u32, cond_exec: bool },
    /// `u`, `g` or `o`: the current permissions of that class (shift 6, 3 or 0).
    Copy(u32),
}

impl Chmod {
    /// The permissions (`0o7777` bits) an entry gets, given its own mode and whether it is
    /// a directory.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic { clauses, .. } => {
                clauses.iter().fold(mode & ALL, |m, c| c.actions.iter().fold(m, |m, a| a.apply(c.who, m, is_dir)))
            }
        }
    }
}

impl Action {
    fn apply(&self, who: u32, mode: u32, is_dir: bool) -> u32 {
        let value = match self.perm {
            // Linux chmod (and BuildKit since it follows it): X looks at the mode as it is
            // now, and works with every operator, not only `+`.
            Perm::Bits { bits, cond_exec } => {
                let exec = cond_exec && (is_dir || mode & 0o111 != 0);
                bits | if exec { 0o111 } else { 0 }
            }
            Perm::Copy(shift) => {
                let class = (mode >> shift) & 0o7;
                class | (class << 3) | (class << 6)
            }
        } & who;
        match self.op {
            Op::Add => mode | value,
            Op::Remove => mode & !value,
            Op::Set => (mode & !who) | value,
        }
    }
}

impl FromStr for Chmod {
    type Err = String;

    /// Parses `755` or `u=rwx,go=rx`; the error says what is wrong and where (1-based
    /// character position in the value).
    fn from_str(s: &str) -> Result<Chmod, String> {
        if s.is_empty() {
            return Err("empty mode: give an octal mode like 755 or a symbolic one like u=rwx,go=rx".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(s, 8) {
                Ok(m) if m <= ALL => Ok(Chmod::Octal(m)),
                Ok(_) => Err("an octal mode is at most 7777".into()),
                Err(_) => Err("an octal mode has only the digits 0 to 7".into()),
            };
        }
        let mut clauses = Vec::new();
        let mut at = 0;
        for part in s.split(',') {
            clauses.push(clause(part, at)?);
            at += part.chars().count() + 1;
        }
        Ok(Chmod::Symbolic { text: s.to_owned(), clauses })
    }
}

/// Parses one clause, `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`; `at` is its position in the value.
fn clause(part: &str, at: usize) -> Result<Clause, String> {
    let chars: Vec<char> = part.chars().collect();
    let mut i = 0;
    let mut who = 0;
    while let Some(c) = chars.get(i) {
        who |= match c {
            'u' => 0o4700,
            'g' => 0o2070,
            'o' => 0o1007,
            'a' => ALL,
            _ => break,
        };
        i += 1;
    }
    // No `who`: everyone, with BuildKit's umask of 0.
    let who = if who == 0 { ALL } else { who };
    let mut actions = Vec::new();
    while i < chars.len() {
        let op = match chars[i] {
            '+' => Op::Add,
            '-' => Op::Remove,
            '=' => Op::Set,
            c => return Err(bad(at + i, c, "is not an operator: each clause is [ugoa]*, then +, - or =, then rwxXst")),
        };
        i += 1;
        let perm = match chars.get(i) {
            Some('u') => Some(6),
            Some('g') => Some(3),
            Some('o') => Some(0),
            _ => None,
        };
        if let Some(shift) = perm {
            i += 1;
            actions.push(Action { op, perm: Perm::Copy(shift) });
            continue;
        }
        let (mut bits, mut cond_exec) = (0, false);
        while let Some(c) = chars.get(i) {
            match c {
                'r' => bits |= 0o444,
                'w' => bits |= 0o222,
                'x' => bits |= 0o111,
                'X' => cond_exec = true,
                's' => bits |= 0o6000,
                't' => bits |= 0o1000,
                '+' | '-' | '=' => break,
                c => return Err(bad(at + i, *c, "is not a permission (r, w, x, X, s, t; or one of u, g, o alone)")),
            }
            i += 1;
        }
        actions.push(Action { op, perm: Perm::Bits { bits, cond_exec } });
    }
    if actions.is_empty() {
        let what = if part.is_empty() { "an empty clause" } else { "a clause without +, - or =" };
        return Err(format!("{what} at character {}: each clause is like u+x, go-w or a=rX", at + 1));
    }
    Ok(Clause { who, actions })
}

fn bad(at: usize, c: char, why: &str) -> String {
    format!("{c:?} at character {} {why}", at + 1)
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chmod::Octal(m) => write!(f, "{m:o}"),
            Chmod::Symbolic { text, .. } => f.write_str(text),
        }
    }
}

/// In a cache key an octal mode stays the number it always was (keys made before symbolic
/// modes existed stay valid); a symbolic mode is its text.
impl serde::Serialize for Chmod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Chmod::Octal(m) => s.serialize_u32(*m),
            Chmod::Symbolic { text, .. } => s.serialize_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Chmod {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn octal_modes_replace_the_permissions() {
        assert_eq!(m("755").apply(0o600, false), 0o755);
        assert_eq!(m("0644").apply(0o4777, true), 0o644);
        assert_eq!(m("4755").apply(0, false), 0o4755);
        assert!("8".parse::<Chmod>().unwrap_err().contains("0 to 7"));
        assert!("17777".parse::<Chmod>().unwrap_err().contains("7777"));
    }

    #[test]
    fn set_clauses_replace_only_their_class() {
        assert_eq!(m("u=rwx,go=rx").apply(0o600, false), 0o755);
        assert_eq!(m("u=rwx,go=rx").apply(0o000, true), 0o755);
        assert_eq!(m("go=").apply(0o777, false), 0o700);
        assert_eq!(m("ug=rw,o=r").apply(0o111, false), 0o664);
        // `=` clears the class's special bit too: set-uid goes with u.
        assert_eq!(m("u=rw").apply(0o4755, false), 0o655);
    }

    #[test]
    fn add_and_remove_keep_the_rest_of_each_files_mode() {
        assert_eq!(m("a+x").apply(0o640, false), 0o751);
        assert_eq!(m("+x").apply(0o600, false), 0o711, "no who means everyone (umask 0)");
        assert_eq!(m("g-w").apply(0o664, false), 0o644);
        assert_eq!(m("g-w").apply(0o755, false), 0o755);
        assert_eq!(m("o-rwx,g+w").apply(0o755, true), 0o770);
        assert_eq!(m("u+x-w").apply(0o644, false), 0o544, "several actions in one clause");
    }

    #[test]
    fn capital_x_is_execute_for_directories_and_executables_only() {
        assert_eq!(m("a+X").apply(0o644, false), 0o644);
        assert_eq!(m("a+X").apply(0o744, false), 0o755);
        assert_eq!(m("a+X").apply(0o644, true), 0o755);
        // Linux (and BuildKit) take X with = too.
        assert_eq!(m("u=rwX,go=rX").apply(0o664, false), 0o644);
        assert_eq!(m("u=rwX,go=rX").apply(0o700, false), 0o755);
        assert_eq!(m("u=rwX,go=rX").apply(0o700, true), 0o755);
        // X sees the mode as the clauses before it left it.
        assert_eq!(m("u+x,go+X").apply(0o600, false), 0o711);
    }

    #[test]
    fn special_bits_and_copies_between_classes() {
        assert_eq!(m("u+s").apply(0o755, false), 0o4755);
        assert_eq!(m("g+s").apply(0o755, true), 0o2755);
        assert_eq!(m("o+s").apply(0o755, false), 0o755, "o has no set-id bit");
        assert_eq!(m("+t").apply(0o777, true), 0o1777);
        assert_eq!(m("u+t").apply(0o777, true), 0o777, "the sticky bit belongs to o");
        assert_eq!(m("g=u").apply(0o750, false), 0o770);
        assert_eq!(m("go=u").apply(0o700, true), 0o777);
        assert_eq!(m("o+g").apply(0o750, false), 0o755);
    }

    #[test]
    fn bad_modes_say_what_and_where() {
        for (s, want) in [
            ("", "empty mode"),
            ("u+z", "'z' at character 3 is not a permission"),
            ("u=rwx,go=rq", "'q' at character 11 is not a permission"),
            ("u", "a clause without +, - or = at character 1"),
            ("u+x,,g+w", "an empty clause at character 5"),
            ("u+x,", "an empty clause at character 5"),
            ("x+r", "'x' at character 1 is not an operator"),
            ("0o755", "'0' at character 1 is not an operator"),
            ("u+gw", "'w' at character 4 is not an operator"),
        ] {
            let e = s.parse::<Chmod>().unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }

    #[test]
    fn keys_keep_octal_numbers_and_symbolic_text() {
        assert_eq!(serde_json::to_string(&m("755")).unwrap(), "493");
        assert_eq!(serde_json::to_string(&m("a+rX,go-w")).unwrap(), "\"a+rX,go-w\"");
        assert_eq!(m("0755").to_string(), "755");
        assert_eq!(m("g-w").to_string(), "g-w");
    }
}
