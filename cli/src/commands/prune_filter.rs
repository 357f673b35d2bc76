//! The `--filter` of docker's prunes (`container prune`, `system prune`): `until=`,
//! `label=` and `label!=`, with the rules docker's daemon applies.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

/// One prune filter.
pub enum PruneFilter {
    /// Created before this time.
    Until(DateTime<Utc>),
    /// `label=` (true) or `label!=` (false), with its `KEY[=VALUE]`.
    Label(bool, String),
}

impl PruneFilter {
    /// docker's prune filters; any other key is refused, as docker refuses it.
    pub fn parse(given: &[String], command: &str) -> Result<Vec<PruneFilter>> {
        given
            .iter()
            .map(|f| match f.split_once('=') {
                Some(("until", v)) => Ok(PruneFilter::Until(super::when::point_in_time(v).context("invalid filter")?)),
                Some(("label", v)) => Ok(PruneFilter::Label(true, v.to_owned())),
                Some(("label!", v)) => Ok(PruneFilter::Label(false, v.to_owned())),
                _ => bail!("invalid filter {f:?}: {command} takes until=, label= and label!="),
            })
            .collect()
    }

    /// Whether `filters` let prune remove an object created at `created` (RFC 3339) with
    /// `labels`, as docker's daemon decides: `until=` and every `label=` must hold, and the
    /// `label!=` filters spare it only when it has every one of their labels.
    pub fn prunes(filters: &[PruneFilter], created: &str, labels: &BTreeMap<String, String>) -> bool {
        let (mut spared_by, mut negatives) = (0, 0);
        for f in filters {
            match f {
                PruneFilter::Until(t) => {
                    if !DateTime::parse_from_rfc3339(created).is_ok_and(|created| created < *t) {
                        return false;
                    }
                }
                PruneFilter::Label(true, l) if !super::has_label(labels, l) => return false,
                PruneFilter::Label(true, _) => {}
                PruneFilter::Label(false, l) => {
                    negatives += 1;
                    spared_by += usize::from(super::has_label(labels, l));
                }
            }
        }
        negatives == 0 || spared_by < negatives
    }

    /// The `until=` time among `filters`, if any (the last given).
    pub fn until(filters: &[PruneFilter]) -> Option<DateTime<Utc>> {
        filters.iter().rev().find_map(|f| match f {
            PruneFilter::Until(t) => Some(*t),
            PruneFilter::Label(..) => None,
        })
    }

    /// The label filters as `volume prune` takes them (`label=...`, `label!=...`).
    pub fn label_args(filters: &[PruneFilter]) -> Vec<String> {
        filters
            .iter()
            .filter_map(|f| match f {
                PruneFilter::Label(true, l) => Some(format!("label={l}")),
                PruneFilter::Label(false, l) => Some(format!("label!={l}")),
                PruneFilter::Until(_) => None,
            })
            .collect()
    }
}
