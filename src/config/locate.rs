//! Where each key of a config file is written, so that a finding about
//! `grants.deploy.allow[0].claims.sub` can point at its line. serde's YAML
//! values carry no positions; saphyr's marked tree does.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Key path → where its key (or list item) starts.
#[derive(Debug, Default)]
pub struct Locations {
    at: HashMap<String, Location>,
}

impl Locations {
    /// Indexes `text`; a file that does not parse yields no locations (the
    /// config loader reports the parse error itself).
    pub fn of(text: &str) -> Locations {
        let mut locations = Locations::default();
        if let Ok(documents) = MarkedYaml::load_from_str(text)
            && let Some(root) = documents.first()
        {
            locations.walk("", root);
        }
        locations
    }

    /// Where `path` is written, or its nearest written parent
    /// (`grants.x.allow[0].claims` for a defaulted key below it).
    pub fn find(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(found) = self.at.get(path) {
                return Some(*found);
            }
            let cut = path.rfind(['.', '['])?;
            path = path.get(..cut)?;
        }
    }

    fn walk(&mut self, path: &str, node: &MarkedYaml<'_>) {
        match &node.data {
            YamlData::Mapping(map) => {
                for (key, value) in map {
                    let name = match &key.data {
                        YamlData::Value(Scalar::String(s)) => s.to_string(),
                        YamlData::Value(Scalar::Integer(n)) => n.to_string(),
                        YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                        _ => continue,
                    };
                    let child = if path.is_empty() {
                        name
                    } else {
                        format!("{path}.{name}")
                    };
                    self.mark(&child, key);
                    self.walk(&child, value);
                }
            }
            YamlData::Sequence(items) => {
                for (index, item) in items.iter().enumerate() {
                    let child = format!("{path}[{index}]");
                    self.mark(&child, item);
                    self.walk(&child, item);
                }
            }
            _ => {}
        }
    }

    fn mark(&mut self, path: &str, node: &MarkedYaml<'_>) {
        let start = node.span.start;
        self.at.entry(path.to_string()).or_insert(Location {
            line: start.line(),
            column: start.col() + 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_keys_are_found() {
        let text =
            "grants:\n  deploy:\n    ttl: 5m\n    allow:\n      - issuer: ci\n        claims: { sub: x, ref: y }\n";
        let at = Locations::of(text);
        assert_eq!(at.find("grants.deploy.ttl"), Some(Location { line: 3, column: 5 }));
        assert_eq!(
            at.find("grants.deploy.allow[0].issuer"),
            Some(Location { line: 5, column: 9 })
        );
        assert_eq!(at.find("grants.deploy.allow[0].claims.ref").map(|l| l.line), Some(6));
        // Not written: its parent.
        assert_eq!(at.find("grants.deploy.max_ttl").map(|l| l.line), Some(2));
        assert_eq!(Locations::of("{ bad").find("grants"), None);
    }
}
