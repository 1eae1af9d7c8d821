//! Release bookkeeping on the host: each deploy uploads into a new release
//! directory, `current` is switched to it only once it is healthy, and the last
//! N are kept for `vpsup rollback`.
//!
//! ```text
//! /srv/vpsup/<app>/releases/20261122T101500Z-3f2a9c1e/   compose files, env files
//! /srv/vpsup/<app>/current -> releases/<id>
//! ```
//!
//! Release ids sort by time (UTC, second resolution) and carry a content hash,
//! so two deploys in the same second of different content never collide.

use time::OffsetDateTime;

/// A new release id: `YYYYMMDDTHHMMSSZ-` and the first 8 hex digits of the
/// release's content hash.
pub fn release_id(at: OffsetDateTime, content_hash: &str) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        &content_hash[..content_hash.len().min(8)]
    )
}

/// Whether `name` is a release directory vpsup made (anything else in
/// `releases/` is left alone).
pub fn is_release_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..].iter().all(|c| c.is_ascii_hexdigit())
}

/// The release before `current`, for a rollback.
pub fn previous<'a>(releases: &'a [String], current: &str) -> Option<&'a str> {
    let mut sorted: Vec<&String> = releases.iter().filter(|r| is_release_id(r)).collect();
    sorted.sort();
    let at = sorted.iter().position(|r| *r == current)?;
    at.checked_sub(1).map(|i| sorted[i].as_str())
}

/// The releases to delete so that `keep` remain: the oldest go first; the
/// current one and the one a rollback would return to are never deleted.
pub fn to_prune(releases: &[String], current: &str, keep: usize) -> Vec<String> {
    let mut sorted: Vec<&String> = releases.iter().filter(|r| is_release_id(r)).collect();
    sorted.sort();
    let protected = [Some(current), previous(releases, current)];
    let mut excess = sorted.len().saturating_sub(keep.max(2));
    let mut out = Vec::new();
    for release in sorted {
        if excess == 0 {
            break;
        }
        if protected.contains(&Some(release.as_str())) {
            continue;
        }
        out.push(release.clone());
        excess -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("2026112{i}T101500Z-0000000{i}"))
            .collect()
    }

    #[test]
    fn ids_sort_by_time_and_are_recognised() {
        let at = time::macros::datetime!(2026-11-22 10:15:00 UTC);
        let id = release_id(at, "3f2a9c1e77aa");
        assert_eq!(id, "20261122T101500Z-3f2a9c1e");
        assert!(is_release_id(&id));
        let later = release_id(at + time::Duration::seconds(1), "00000000");
        assert!(later > id);
        for not in [
            "current",
            "20261122T101500Z",
            "20261122T101500Z-3f2a9c1g",
            "tmp.123",
        ] {
            assert!(!is_release_id(not), "{not}");
        }
    }

    #[test]
    fn previous_is_the_one_before_current() {
        let r = ids(3);
        assert_eq!(previous(&r, &r[2]), Some(r[1].as_str()));
        assert_eq!(previous(&r, &r[0]), None);
        assert_eq!(previous(&r, "20991231T000000Z-ffffffff"), None);
    }

    #[test]
    fn pruning_keeps_the_newest_and_never_current_or_its_predecessor() {
        let r = ids(7);
        assert_eq!(to_prune(&r, &r[6], 5), [r[0].clone(), r[1].clone()]);
        assert!(to_prune(&r, &r[6], 10).is_empty());
        // After a rollback, current is old: it and the one before it stay.
        let pruned = to_prune(&r, &r[1], 3);
        assert_eq!(
            pruned,
            [r[2].clone(), r[3].clone(), r[4].clone(), r[5].clone()]
        );
        // keep = 1 still keeps a rollback target.
        assert_eq!(to_prune(&r[..3], &r[2], 1), [r[0].clone()]);
        // Foreign directories are never touched.
        let mut with_junk = r[..2].to_vec();
        with_junk.push("notes".into());
        assert!(to_prune(&with_junk, &r[1], 2).is_empty());
    }
}
