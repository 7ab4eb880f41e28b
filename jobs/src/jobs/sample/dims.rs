//! The DIM files and the funnels file a sample comes with: `dim_user` with
//! every user the events name, `dim_contract` for the targets partners pay
//! for, and the funnels the sessions walk.

use chrono::{Days, NaiveDate};
use object_store::{ObjectStoreExt, PutPayload};

use super::business::Population;
use crate::engine::session::Engine;
use crate::error::Result;
use crate::store::Location;

/// The funnels file `sample` writes: the example of analyses.md, which
/// the sample's pages and targets can complete.
pub const SAMPLE_FUNNELS: &str = r#"# Funnels for ads_trk_funnel_1d (analyses.md). Each [[funnel]] has an id,
# a window in seconds and ordered steps; a step matches event_type and
# each of page_path (normalised), target_type and target_id it names.
[[funnel]]
id = "add_device"
window_seconds = 3600
[[funnel.step]]
event_type = "page_enter"
page_path = "/home"
[[funnel.step]]
event_type = "click"
target_id = "btn-add-device"
[[funnel.step]]
event_type = "page_enter"
page_path = "/devices/{id}"
"#;

/// The toy shape's DIM files: 40 users, two contracts.
pub(super) async fn write_toy(
    engine: &Engine,
    warehouse: &Location,
    date: NaiveDate,
) -> Result<()> {
    let mut users = String::from("user_id,gender,birth_date\n");
    for u in 0..40 {
        let gender = ["M", "F", "other", ""][u % 4];
        let birth = if u % 7 == 0 {
            String::new()
        } else {
            format!(
                "{}-{:02}-{:02}",
                1950 + (u * 13) % 60,
                1 + u % 12,
                1 + u % 28
            )
        };
        users.push_str(&format!("u{u},{gender},{birth}\n"));
    }
    let start = date - Days::new(30);
    let contracts = format!(
        "contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to\n\
         c-1,p-ads,banner-spring-sale,CPM,2.50,USD,{start},\n\
         c-2,p-dev,btn-add-device,CPC,0.12,USD,{start},{end}\n",
        end = date + Days::new(60)
    );
    put_all(engine, warehouse, users, contracts).await
}

async fn put_all(
    engine: &Engine,
    warehouse: &Location,
    users: String,
    contracts: String,
) -> Result<()> {
    let store = engine.registry.for_location(warehouse)?;
    for (path, body) in [
        ("dim/dim_user/dim_user.csv", users),
        ("dim/dim_contract/dim_contract.csv", contracts),
        ("conf/funnels.toml", SAMPLE_FUNNELS.to_string()),
    ] {
        let loc = warehouse.join(path);
        store
            .put(&loc.path(), PutPayload::from(body.into_bytes()))
            .await?;
    }
    Ok(())
}

/// The business shape's DIM files: every signed-in user of `pop` (gender
/// and birth date, a few of each unknown), and a contract for every fifth
/// of the 2 000 most-shown targets (CPC for buttons and pages, CPM for
/// banners), valid from 30 days before `date`.
pub(super) async fn write_business(
    engine: &Engine,
    warehouse: &Location,
    date: NaiveDate,
    pop: &Population,
) -> Result<()> {
    let mut users = String::from("user_id,gender,birth_date\n");
    for u in (0..pop.users).filter(|u| Population::signed_in(*u)) {
        let (gender, birth) = pop.person(u);
        users.push_str(&format!("{},{gender},{birth}\n", Population::user_id(u)));
    }
    let start = date - Days::new(30);
    let mut contracts = String::from(
        "contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to\n",
    );
    for r in (0..pop.targets.min(2000)).filter(|r| r % 5 == 0 || *r == 1) {
        let (kind, id) = Population::target(r);
        let (model, price) = match kind {
            "banner" => ("CPM", 1.0 + (r % 7) as f64 * 0.5),
            _ => ("CPC", 0.05 + (r % 9) as f64 * 0.01),
        };
        contracts.push_str(&format!(
            "c-{r},p-{},{id},{model},{price:.2},USD,{start},\n",
            r % 37
        ));
    }
    put_all(engine, warehouse, users, contracts).await
}
