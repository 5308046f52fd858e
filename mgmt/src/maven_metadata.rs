//! `maven-metadata.xml` of one artifact, built from the catalog: every version, `latest` (the highest),
//! `release` (the highest that is not a `-SNAPSHOT`, left out when there is none) and `lastUpdated` (the
//! newest upload, `yyyyMMddHHmmss` in UTC). Versions are ordered by semantic versioning, so the document
//! does not depend on the order the catalog lists them in.

use kvstore::SemVer;

/// Whether a version is a Maven snapshot (replaceable); every other version is a release (immutable).
pub fn is_snapshot(version: &SemVer) -> bool {
    version.pre_release().is_some_and(|pre| pre == "SNAPSHOT" || pre.ends_with("-SNAPSHOT"))
}

/// The document for `group:id` with `versions` (version, upload time in ms since the Unix epoch).
pub fn document(group: &str, id: &str, versions: &[(SemVer, u64)]) -> String {
    let mut sorted: Vec<&(SemVer, u64)> = versions.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let latest = sorted.last().map(|(v, _)| v.to_string());
    let release = sorted.iter().rev().find(|(v, _)| !is_snapshot(v)).map(|(v, _)| v.to_string());
    let updated_ms = sorted.iter().map(|(_, ms)| *ms).max().unwrap_or(0);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n");
    xml += &format!("  <groupId>{}</groupId>\n  <artifactId>{}</artifactId>\n", escape(group), escape(id));
    xml += "  <versioning>\n";
    if let Some(latest) = latest {
        xml += &format!("    <latest>{}</latest>\n", escape(&latest));
    }
    if let Some(release) = release {
        xml += &format!("    <release>{}</release>\n", escape(&release));
    }
    xml += "    <versions>\n";
    for (version, _) in &sorted {
        xml += &format!("      <version>{}</version>\n", escape(&version.to_string()));
    }
    xml += "    </versions>\n";
    xml += &format!("    <lastUpdated>{}</lastUpdated>\n", timestamp(updated_ms));
    xml += "  </versioning>\n</metadata>\n";
    xml
}

/// Coordinates are checked to `[A-Za-z0-9._+-]`; escaping anyway keeps the document well-formed whatever
/// the catalog holds.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `yyyyMMddHHmmss` in UTC.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> SemVer {
        SemVer::parse(text).unwrap()
    }

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "19700101000000");
        // 2024-02-29T23:59:58Z, a leap day.
        assert_eq!(timestamp(1_709_251_198_000), "20240229235958");
        assert_eq!(timestamp(1_700_000_000_123), "20231114221320");
    }

    #[test]
    fn latest_release_and_versions_follow_semver_not_catalog_order() {
        let versions = [(v("1.10.0"), 5_000), (v("2.0.0-SNAPSHOT"), 9_000), (v("1.2.0"), 7_000), (v("1.9.0-rc.1"), 1)];
        let xml = document("org.example", "echo", &versions);
        assert!(xml.contains("<groupId>org.example</groupId>"), "{xml}");
        assert!(xml.contains("<artifactId>echo</artifactId>"), "{xml}");
        assert!(xml.contains("<latest>2.0.0-SNAPSHOT</latest>"), "{xml}");
        assert!(xml.contains("<release>1.10.0</release>"), "{xml}");
        let order: Vec<&str> = xml.lines().filter_map(|l| l.trim().strip_prefix("<version>")).collect();
        assert_eq!(order, ["1.2.0</version>", "1.9.0-rc.1</version>", "1.10.0</version>", "2.0.0-SNAPSHOT</version>"]);
        assert!(xml.contains("<lastUpdated>19700101000009</lastUpdated>"), "{xml}");
        let mut reversed = versions.to_vec();
        reversed.reverse();
        assert_eq!(document("org.example", "echo", &reversed), xml);
    }

    #[test]
    fn only_snapshots_have_no_release() {
        let xml = document("g", "a", &[(v("1.0.0-SNAPSHOT"), 1)]);
        assert!(!xml.contains("<release>"), "{xml}");
        assert!(is_snapshot(&v("1.0.0-SNAPSHOT")));
        assert!(is_snapshot(&v("1.0.0-alpha-SNAPSHOT")));
        assert!(!is_snapshot(&v("1.0.0-rc.1")));
        assert!(!is_snapshot(&v("1.0.0")));
    }
}
