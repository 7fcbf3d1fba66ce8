//! The orders DestinationRule's `localityLbSetting`, generated from the zones the app really
//! runs in.
//!
//! The seed hard-coded three af-south-1 zones and sent 80% of the traffic from *every* zone to
//! the first one, so most orders calls crossed zones and the third zone's orders pods got
//! nothing. Here the rule is a function of the zones: in `failover` mode Istio's
//! locality-prioritised load balancing keeps each zone's calls at home and fails over inside
//! the region (which Istio honours only with outlier detection, set by the same rule); in
//! `distribute` mode *each* zone keeps `local_weight` percent and spreads the rest evenly over
//! the other zones, every row adding up to exactly 100 as Istio's validation demands.
//!
//! The result is a JSON value that [`crate::render`] writes into the rule's template
//! (`stacks/locality/orders-destination-rule.yaml`) as a YAML flow mapping.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{LocalityMode, LocalitySpec};

/// One `distribute` entry: where calls from one locality go, in percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DistributeRule {
    /// The callers' locality, `<region>/<zone>/*`.
    pub from: String,
    /// Destination locality -> percent; adds up to 100, no zero weights.
    pub to: BTreeMap<String, u32>,
}

/// The generated setting and what the user should know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalityPolicy {
    /// The DestinationRule's `spec.trafficPolicy.loadBalancer.localityLbSetting`.
    pub setting: Value,
    /// The zones it was generated for, sorted.
    pub zones: Vec<String>,
    /// Things that do not stop the rule but change what it does (a row for a zone the app
    /// does not run in, a single zone).
    pub warnings: Vec<String>,
}

/// Why no rule could be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Nothing to generate a rule from.
    #[error("no zones: neither the app's nodes nor the stack name a zone")]
    NoZones,
    /// A zone name that would not make a valid Istio locality.
    #[error(
        "zone `{0}` cannot be part of an Istio locality (it contains `/` or `*`, or is empty)"
    )]
    BadZone(String),
}

/// Istio's locality string for every sub-zone of `zone`: `<region>/<zone>/*`.
pub fn locality(region: &str, zone: &str) -> String {
    format!("{region}/{zone}/*")
}

/// `local_weight` percent for each zone itself, the rest spread evenly over the other zones.
///
/// When the rest does not divide evenly, the extra points go to the zones that follow the
/// caller in sorted order (wrapping around), so no zone is favoured by every row. Zones are
/// sorted and deduplicated first: the same zones always give the same rows.
pub fn distribute(region: &str, zones: &[String], local_weight: u32) -> Vec<DistributeRule> {
    let zones = sorted_unique(zones);
    let local_weight = local_weight.min(100);
    let n = zones.len();
    (0..n)
        .map(|i| {
            let mut to = BTreeMap::from([(locality(region, &zones[i]), local_weight)]);
            let others = n - 1;
            if others == 0 {
                // Nowhere else to send the rest: the one zone takes everything.
                to.insert(locality(region, &zones[i]), 100);
            } else {
                let rest = 100 - local_weight;
                let others_u32 = u32::try_from(others).expect("at most a handful of zones");
                let (base, extra) = (rest / others_u32, rest % others_u32);
                for k in 1..=others {
                    let points = base + u32::from(k <= extra as usize);
                    if points > 0 {
                        to.insert(locality(region, &zones[(i + k) % n]), points);
                    }
                }
            }
            DistributeRule {
                from: locality(region, &zones[i]),
                to,
            }
        })
        .collect()
}

/// The `localityLbSetting` for the stack's locality settings and the zones in use.
///
/// # Errors
/// [`PolicyError::NoZones`] for an empty zone list, [`PolicyError::BadZone`] for a zone name
/// that cannot appear in a locality.
pub fn locality_lb_setting(
    spec: &LocalitySpec,
    region: &str,
    zones: &[String],
) -> Result<LocalityPolicy, PolicyError> {
    let zones = sorted_unique(zones);
    if zones.is_empty() {
        return Err(PolicyError::NoZones);
    }
    if let Some(bad) = zones
        .iter()
        .find(|z| z.is_empty() || z.contains(['/', '*']))
    {
        return Err(PolicyError::BadZone(bad.clone()));
    }
    let mut warnings = Vec::new();
    if zones.len() == 1 {
        warnings.push(format!(
            "the app runs in one zone ({}), so there is no cross-zone traffic to save; \
             the rule only takes effect once pods run in a second zone",
            zones[0]
        ));
    }
    let setting = match spec.mode {
        // traffic-distribution renders no rule; failover's setting keeps the variable whole.
        LocalityMode::Failover | LocalityMode::TrafficDistribution => json!({ "enabled": true }),
        LocalityMode::Distribute => {
            let weight = spec.local_weight.unwrap_or(100);
            let mut rules = distribute(region, &zones, weight);
            for (from, row) in &spec.distribute {
                if !zones.contains(from) {
                    warnings.push(format!(
                        "locality.distribute.{from}: the app does not run in {from}, so this \
                         row applies to no caller"
                    ));
                    continue;
                }
                for to in row.keys().filter(|to| !zones.contains(to)) {
                    warnings.push(format!(
                        "locality.distribute.{from}.{to}: the app does not run in {to}; Istio \
                         sends that share to the remaining zones"
                    ));
                }
                let rule = rules
                    .iter_mut()
                    .find(|r| r.from == locality(region, from))
                    .expect("every zone in use has a generated row");
                rule.to = row
                    .iter()
                    .map(|(to, w)| (locality(region, to), *w))
                    .collect();
            }
            json!({ "enabled": true, "distribute": rules })
        }
    };
    Ok(LocalityPolicy {
        setting,
        zones,
        warnings,
    })
}

fn sorted_unique(zones: &[String]) -> Vec<String> {
    let mut zones = zones.to_vec();
    zones.sort();
    zones.dedup();
    zones
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Stack;

    fn zones(names: &[&str]) -> Vec<String> {
        names.iter().map(|z| (*z).to_owned()).collect()
    }

    fn spec(locality_yaml: &str) -> LocalitySpec {
        let yaml = format!(
            "name: t\nzones: [us-east-1a, us-east-1b, us-east-1c, us-east-1d]\n{locality_yaml}"
        );
        Stack::parse(&yaml, "test.yaml").unwrap().locality
    }

    /// A row as (from zone, [(to zone, weight)]), region and `/*` stripped.
    type Row = (String, Vec<(String, u32)>);

    fn table(rules: &[DistributeRule]) -> Vec<Row> {
        let short = |l: &str| l.split('/').nth(1).unwrap().to_owned();
        rules
            .iter()
            .map(|r| {
                (
                    short(&r.from),
                    r.to.iter().map(|(k, v)| (short(k), *v)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn distribute_tables() {
        let row = |from: &str, to: &[(&str, u32)]| {
            (
                from.to_owned(),
                to.iter().map(|(z, w)| ((*z).to_owned(), *w)).collect(),
            )
        };
        let cases: Vec<(Vec<String>, u32, Vec<Row>)> = vec![
            (
                zones(&["a", "b"]),
                80,
                vec![
                    row("a", &[("a", 80), ("b", 20)]),
                    row("b", &[("a", 20), ("b", 80)]),
                ],
            ),
            (
                zones(&["a", "b", "c"]),
                80,
                vec![
                    row("a", &[("a", 80), ("b", 10), ("c", 10)]),
                    row("b", &[("a", 10), ("b", 80), ("c", 10)]),
                    row("c", &[("a", 10), ("b", 10), ("c", 80)]),
                ],
            ),
            // 20 over three zones: the extra points rotate with the caller.
            (
                zones(&["a", "b", "c", "d"]),
                80,
                vec![
                    row("a", &[("a", 80), ("b", 7), ("c", 7), ("d", 6)]),
                    row("b", &[("a", 6), ("b", 80), ("c", 7), ("d", 7)]),
                    row("c", &[("a", 7), ("b", 6), ("c", 80), ("d", 7)]),
                    row("d", &[("a", 7), ("b", 7), ("c", 6), ("d", 80)]),
                ],
            ),
            // Less rest than other zones: zero weights are left out.
            (
                zones(&["a", "b", "c"]),
                99,
                vec![
                    row("a", &[("a", 99), ("b", 1)]),
                    row("b", &[("b", 99), ("c", 1)]),
                    row("c", &[("a", 1), ("c", 99)]),
                ],
            ),
            (
                zones(&["a", "b", "c"]),
                100,
                vec![
                    row("a", &[("a", 100)]),
                    row("b", &[("b", 100)]),
                    row("c", &[("c", 100)]),
                ],
            ),
            (zones(&["a"]), 80, vec![row("a", &[("a", 100)])]),
            // Unsorted, duplicated input: same rows as sorted.
            (
                zones(&["b", "a", "b"]),
                50,
                vec![
                    row("a", &[("a", 50), ("b", 50)]),
                    row("b", &[("a", 50), ("b", 50)]),
                ],
            ),
        ];
        for (zones, weight, want) in cases {
            let rules = distribute("r", &zones, weight);
            assert_eq!(table(&rules), want, "{zones:?} at {weight}%");
            for rule in &rules {
                assert_eq!(rule.to.values().sum::<u32>(), 100, "{rule:?}");
            }
        }
    }

    #[test]
    fn every_row_adds_up_to_100_and_keeps_its_weight() {
        for n in 2..=6 {
            let names: Vec<String> = (0..n).map(|i| format!("zone-{i}")).collect();
            for weight in 1..=100 {
                for rule in distribute("us-east-1", &names, weight) {
                    assert_eq!(rule.to.values().sum::<u32>(), 100, "{n} zones, {weight}%");
                    assert_eq!(rule.to[&rule.from], weight, "{n} zones, {weight}%");
                    assert!(rule.to.values().all(|w| *w > 0));
                }
            }
        }
    }

    #[test]
    fn localities_carry_region_zone_and_any_subzone() {
        let rules = distribute("eu-west-1", &zones(&["eu-west-1a", "eu-west-1b"]), 90);
        assert_eq!(rules[0].from, "eu-west-1/eu-west-1a/*");
        assert_eq!(
            rules[0].to.keys().collect::<Vec<_>>(),
            ["eu-west-1/eu-west-1a/*", "eu-west-1/eu-west-1b/*"]
        );
    }

    #[test]
    fn failover_mode_enables_locality_load_balancing_without_weights() {
        let policy = locality_lb_setting(
            &spec(""),
            "us-east-1",
            &zones(&["us-east-1a", "us-east-1b"]),
        )
        .unwrap();
        assert_eq!(policy.setting, json!({ "enabled": true }));
        assert!(policy.warnings.is_empty());
    }

    #[test]
    fn distribute_mode_uses_local_weight_and_explicit_rows() {
        let s = spec(
            "locality:\n  mode: distribute\n  local_weight: 90\n  distribute:\n    \
             us-east-1b: {us-east-1b: 60, us-east-1a: 40}\n",
        );
        let policy =
            locality_lb_setting(&s, "us-east-1", &zones(&["us-east-1b", "us-east-1a"])).unwrap();
        assert_eq!(
            policy.setting,
            json!({ "enabled": true, "distribute": [
                { "from": "us-east-1/us-east-1a/*",
                  "to": { "us-east-1/us-east-1a/*": 90, "us-east-1/us-east-1b/*": 10 } },
                { "from": "us-east-1/us-east-1b/*",
                  "to": { "us-east-1/us-east-1a/*": 40, "us-east-1/us-east-1b/*": 60 } },
            ]})
        );
        assert_eq!(policy.zones, zones(&["us-east-1a", "us-east-1b"]));
        assert!(policy.warnings.is_empty(), "{:?}", policy.warnings);
    }

    #[test]
    fn explicit_rows_for_zones_not_in_use_are_warned_about() {
        let s = spec(
            "locality:\n  mode: distribute\n  distribute:\n    \
             us-east-1d: {us-east-1d: 100}\n    us-east-1a: {us-east-1a: 50, us-east-1c: 50}\n",
        );
        let policy =
            locality_lb_setting(&s, "us-east-1", &zones(&["us-east-1a", "us-east-1b"])).unwrap();
        assert_eq!(policy.warnings.len(), 2, "{:?}", policy.warnings);
        assert!(policy.warnings[0].contains("us-east-1a.us-east-1c"));
        assert!(policy.warnings[1].contains("does not run in us-east-1d"));
    }

    #[test]
    fn no_zones_or_bad_zones_are_errors() {
        assert_eq!(
            locality_lb_setting(&spec(""), "r", &[]),
            Err(PolicyError::NoZones)
        );
        assert_eq!(
            locality_lb_setting(&spec(""), "r", &zones(&["a/b"])),
            Err(PolicyError::BadZone("a/b".into()))
        );
        let one = locality_lb_setting(&spec(""), "r", &zones(&["a"])).unwrap();
        assert!(one.warnings[0].contains("one zone"));
    }
}
