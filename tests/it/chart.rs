//! The Helm chart's values schema names every top-level config key stint
//! knows, so a key added to stint cannot be refused by the chart (or the
//! reverse) unnoticed.

use std::collections::BTreeSet;

#[test]
fn the_chart_schema_knows_exactly_the_config_keys_stint_knows() {
    // stint's own list, from its error for an unknown key.
    let error =
        match stint::config::Config::parse("no_such_key: 1\n", "probe.yaml", std::path::Path::new("."), &|_| None) {
            Ok(_) => panic!("an unknown key must be refused"),
            Err(e) => e.to_string(),
        };
    let list = error.split("expected one of").nth(1).expect("the error lists the keys");
    let stint_keys: BTreeSet<String> = list.split('`').skip(1).step_by(2).map(str::to_string).collect();
    assert!(stint_keys.contains("grants") && stint_keys.contains("audit"), "{error}");

    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/stint/values.schema.json")).unwrap(),
    )
    .unwrap();
    let chart_keys: BTreeSet<String> = schema["properties"]["config"]["propertyNames"]["enum"]
        .as_array()
        .expect("config.propertyNames.enum in values.schema.json")
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        chart_keys, stint_keys,
        "charts/stint/values.schema.json config keys vs stint's"
    );
}
