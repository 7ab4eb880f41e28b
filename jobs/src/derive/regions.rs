//! Regions and their business time zones (events.md, "Regions and time
//! zones"). Every daily and hourly figure is cut in the region's zone, so a
//! region without one is a configuration error raised before any work.

use std::collections::BTreeMap;

use chrono_tz::Tz;

use crate::error::{Error, Result};

/// The regions tauc knows out of the box and their zones.
pub const DEFAULT_REGIONS: [(&str, &str); 3] = [
    ("aps1", "Asia/Kolkata"),
    ("use1", "America/New_York"),
    ("euw1", "Europe/Dublin"),
];

/// Region name to time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions(BTreeMap<String, Tz>);

impl Default for Regions {
    fn default() -> Self {
        let map = DEFAULT_REGIONS
            .iter()
            .map(|(r, tz)| ((*r).to_string(), tz.parse().expect("built-in zones parse")))
            .collect();
        Regions(map)
    }
}

impl Regions {
    /// Adds or overrides a region's zone; an unknown zone name is an error.
    pub fn set(&mut self, region: &str, zone: &str) -> Result<()> {
        let tz: Tz = zone.trim().parse().map_err(|_| {
            Error::config(format!(
                "unknown time zone '{zone}' for region '{region}' (expected an IANA name such as 'Europe/Dublin')"
            ))
        })?;
        self.0.insert(region.trim().to_string(), tz);
        Ok(())
    }

    /// The zone of `region`, or a configuration error naming it.
    pub fn zone(&self, region: &str) -> Result<Tz> {
        self.0.get(region).copied().ok_or_else(|| {
            Error::config(format!(
                "region '{region}' has no time zone (known: {}); add it to dim_region or pick a known region",
                self.names().join(", ")
            ))
        })
    }

    /// All configured region names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let mut r = Regions::default();
        assert_eq!(r.zone("aps1").unwrap(), chrono_tz::Asia::Kolkata);
        assert!(r.zone("apse2").unwrap_err().to_string().contains("'apse2'"));
        assert!(r.set("apse2", "Mars/Base").is_err());
        r.set("apse2", "Australia/Sydney").unwrap();
        assert_eq!(r.names().len(), 4);
    }
}
