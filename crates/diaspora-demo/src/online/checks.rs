//! The rollback, checked from provenance alone.

use super::*;

/// From provenance alone: the version the edge runs after the rollback
/// was trained on nothing derived from the bad scan; every edge image made
/// with an invalid version is invalid; every version trained on the bad
/// scan is invalid.
pub(crate) fn check_rollback(
    prov: &mut Provenance,
    shared: &Shared,
) -> Result<BTreeMap<String, bool>> {
    let mut checks = BTreeMap::new();
    let Some(bad) = shared.bad_scan.lock().clone() else {
        return Ok(checks);
    };
    let rollback = *shared.rollback.lock();
    let bad_records: std::collections::HashSet<i64> = prov
        .find_tag("scan", &TagValue::Str(bad.clone()), usize::MAX)?
        .into_iter()
        .collect();
    checks.insert(
        "bad_scan_records_all_invalid".into(),
        !bad_records.is_empty()
            && bad_records
                .iter()
                .all(|id| prov.is_invalid(*id).unwrap_or(false)),
    );
    if let Some((v, _)) = rollback {
        let clean = match prov.model_version(MODEL, v as i64)? {
            Some(id) => {
                let up = prov.lineage(id, diaspora_provenance::Direction::Up, None)?;
                !prov.is_invalid(id)? && up.nodes.iter().all(|(n, _)| !bad_records.contains(n))
            }
            None => v == 0,
        };
        checks.insert("rollback_version_saw_nothing_of_the_bad_scan".into(), clean);
    }
    // Every edge image made with an invalid version is invalid.
    let mut ok = true;
    for (version, id, _) in prov.backend().model_versions(MODEL)? {
        if !prov.is_invalid(id)? {
            continue;
        }
        for e in prov.find_tag(
            "model_version",
            &TagValue::infer(&version.to_string()),
            usize::MAX,
        )? {
            ok &= prov.is_invalid(e)?;
        }
    }
    checks.insert("edge_images_of_invalid_versions_invalid".into(), ok);
    Ok(checks)
}
