//! City and country of a coordinate: the nearest populated place in the
//! GeoNames `cities1000` gazetteer that the `reverse_geocoder` crate ships
//! (about 145 000 places, searched on the unit sphere, so "nearest" is by
//! great-circle distance). Loaded once per process.

use std::sync::OnceLock;

use reverse_geocoder::ReverseGeocoder;

fn geocoder() -> &'static ReverseGeocoder {
    static G: OnceLock<ReverseGeocoder> = OnceLock::new();
    G.get_or_init(ReverseGeocoder::new)
}

/// `(city, country)` — the place name and its ISO 3166-1 alpha-2 code.
pub fn nearest_place(lat: f64, lon: f64) -> (String, String) {
    let r = geocoder().search((lat, lon)).record;
    (r.name.clone(), r.cc.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cities() {
        assert_eq!(
            nearest_place(53.3498, -6.2603),
            ("Dublin".into(), "IE".into())
        );
        let (city, cc) = nearest_place(40.7128, -74.0060);
        assert_eq!(cc, "US");
        assert!(city.contains("New York") || city == "Manhattan", "{city}");
    }
}
