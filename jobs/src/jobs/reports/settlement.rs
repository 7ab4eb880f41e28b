//! Partner settlement (analyses.md, `ads_bill_settlement_1d`): the
//! contracts of `dim_contract`, the 30-second duplicate-click rule, and
//! money as exact decimals.
//!
//! Money is an `i128` count of millionths (`Decimal128(18, 6)`), never a
//! float: a CPM amount `qty * price / 1000` is computed in billionths and
//! rounded half away from zero to cents with integer arithmetic.

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// Decimal places of money values.
pub const MONEY_SCALE: u32 = 6;

/// Largest magnitude `Decimal128(18, 6)` holds.
const MONEY_MAX: i128 = 999_999_999_999_999_999;

/// How a contract bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// Per valid click.
    Cpc,
    /// Per thousand valid impressions.
    Cpm,
}

impl Pricing {
    /// `CPC` or `CPM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pricing::Cpc => "CPC",
            Pricing::Cpm => "CPM",
        }
    }
}

/// One row of `dim_contract`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    /// `contract_id`.
    pub contract_id: String,
    /// `partner_id`.
    pub partner_id: String,
    /// The billed target.
    pub target_id: String,
    /// CPC or CPM.
    pub pricing: Pricing,
    /// Unit price in millionths.
    pub unit_price: i128,
    /// `currency`.
    pub currency: String,
    /// First day billed.
    pub valid_from: NaiveDate,
    /// Last day billed; `None` = open.
    pub valid_to: Option<NaiveDate>,
}

impl Contract {
    /// Whether the contract bills local date `dt`.
    pub fn active_on(&self, dt: NaiveDate) -> bool {
        self.valid_from <= dt && self.valid_to.is_none_or(|to| dt <= to)
    }

    /// The billable quantity and its amount (millionths, rounded to
    /// cents) for the valid counts.
    pub fn bill(&self, valid_clicks: i64, valid_impressions: i64) -> Result<(i64, i128)> {
        let (qty, divisor) = match self.pricing {
            Pricing::Cpc => (valid_clicks, 1),
            Pricing::Cpm => (valid_impressions, 1000),
        };
        // exact value in millionths / divisor
        let exact = (qty as i128)
            .checked_mul(self.unit_price)
            .filter(|v| v.abs() / divisor <= MONEY_MAX)
            .ok_or_else(|| {
                Error::Invariant(format!(
                    "contract {}: amount for {qty} units overflows Decimal128(18, 6)",
                    self.contract_id
                ))
            })?;
        // cents are 10^4 millionths
        Ok((qty, round_half_away(exact, 10_000 * divisor) / divisor))
    }
}

/// Rounds `v` to a multiple of `step`, halves away from zero.
pub fn round_half_away(v: i128, step: i128) -> i128 {
    let q = v / step;
    let r = v % step;
    let q = if 2 * r.abs() >= step {
        q + v.signum()
    } else {
        q
    };
    q * step
}

/// Parses decimal text (`0.35`, `12`, `-1.5`) into millionths; `None` when
/// it is not a decimal or has more than six decimal places.
pub fn parse_money(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > MONEY_SCALE as usize
        || int.len() > 12
    {
        return None;
    }
    let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_v: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i128>().ok()? * 10i128.pow(MONEY_SCALE - frac.len() as u32)
    };
    let v = int * 10i128.pow(MONEY_SCALE) + frac_v;
    Some(if neg { -v } else { v })
}

/// The columns of `dim_contract`, in its documented order.
pub const CONTRACT_COLUMNS: [&str; 8] = [
    "contract_id",
    "partner_id",
    "target_id",
    "pricing_model",
    "unit_price",
    "currency",
    "valid_from",
    "valid_to",
];

/// Validates one `dim_contract` record (values in [`CONTRACT_COLUMNS`]
/// order); `at` names the file and line for errors.
pub fn contract_from_record(at: &str, v: &[Option<String>]) -> Result<Contract> {
    let bad = |col: &str, why: String| {
        Error::BadInput(format!(
            "{at}: dim_contract column {col}: {why}; fix the row in the dim_contract file"
        ))
    };
    let get = |i: usize| v.get(i).cloned().flatten().map(|s| s.trim().to_string());
    let required = |i: usize| {
        get(i)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(CONTRACT_COLUMNS[i], "empty".into()))
    };
    let date = |i: usize, s: &str| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            bad(
                CONTRACT_COLUMNS[i],
                format!("'{s}' is not a date YYYY-MM-DD"),
            )
        })
    };
    let pricing = match required(3)?.to_ascii_uppercase().as_str() {
        "CPC" => Pricing::Cpc,
        "CPM" => Pricing::Cpm,
        other => {
            return Err(bad("pricing_model", format!("'{other}' is not CPC or CPM")));
        }
    };
    let price_text = required(4)?;
    let unit_price = parse_money(&price_text)
        .filter(|p| *p >= 0)
        .ok_or_else(|| {
            bad(
                "unit_price",
                format!(
                    "'{price_text}' is not a non-negative decimal with at most 6 decimal places"
                ),
            )
        })?;
    let valid_from = date(6, &required(6)?)?;
    let valid_to = match get(7).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(date(7, &s)?),
    };
    if valid_to.is_some_and(|to| to < valid_from) {
        return Err(bad("valid_to", "before valid_from".into()));
    }
    Ok(Contract {
        contract_id: required(0)?,
        partner_id: required(1)?,
        target_id: required(2)?,
        pricing,
        unit_price,
        currency: required(5)?,
        valid_from,
        valid_to,
    })
}

/// Parses a `dim_contract` CSV file (header line with the column names,
/// any order); `source` names it in errors.
pub fn parse_contracts_csv(source: &str, text: &[u8]) -> Result<Vec<Contract>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text);
    let header = reader
        .headers()
        .map_err(|e| Error::BadInput(format!("{source}: cannot read the header line: {e}")))?
        .clone();
    let index: Vec<usize> = CONTRACT_COLUMNS
        .iter()
        .map(|c| {
            header.iter().position(|h| h.trim() == *c).ok_or_else(|| {
                Error::BadInput(format!(
                    "{source}:1: dim_contract has no column '{c}' (expected {})",
                    CONTRACT_COLUMNS.join(",")
                ))
            })
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            Error::BadInput(format!("{source}:{line}: {e}"))
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let values: Vec<Option<String>> = index
            .iter()
            .map(|i| rec.get(*i).map(str::to_string))
            .collect();
        out.push(contract_from_record(&format!("{source}:{line}"), &values)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::measures::dup_clicks;

    fn c(ts: &[i64]) -> i64 {
        let mut v: Vec<(i64, String)> = ts
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, format!("e{i}")))
            .collect();
        dup_clicks(&mut v)
    }

    #[test]
    fn duplicate_clicks() {
        assert_eq!(c(&[0, 29_999]), 1);
        assert_eq!(c(&[0, 30_000]), 0);
        // a chain of fast clicks: each is measured against the first, the
        // last counted one, not against its neighbour
        assert_eq!(c(&[0, 20_000, 40_000]), 1);
        assert_eq!(c(&[0, 10_000, 20_000, 30_000]), 2);
        assert_eq!(c(&[40_000, 0, 20_000]), 1);
        assert_eq!(c(&[]), 0);
    }

    #[test]
    fn money() {
        assert_eq!(parse_money("0.35"), Some(350_000));
        assert_eq!(parse_money("12"), Some(12_000_000));
        assert_eq!(parse_money(".5"), Some(500_000));
        assert_eq!(parse_money("1.1234567"), None);
        assert_eq!(parse_money("1,5"), None);
        assert_eq!(parse_money(""), None);
        assert_eq!(round_half_away(5_000, 10_000), 10_000);
        assert_eq!(round_half_away(4_999, 10_000), 0);
        assert_eq!(round_half_away(-5_000, 10_000), -10_000);
        assert_eq!(round_half_away(-4_999, 10_000), 0);
    }

    fn contract(pricing: Pricing, price: &str) -> Contract {
        Contract {
            contract_id: "k".into(),
            partner_id: "p".into(),
            target_id: "t".into(),
            pricing,
            unit_price: parse_money(price).unwrap(),
            currency: "USD".into(),
            valid_from: NaiveDate::from_ymd_opt(2024, 6, 1).unwrap(),
            valid_to: Some(NaiveDate::from_ymd_opt(2024, 6, 30).unwrap()),
        }
    }

    #[test]
    fn amounts() {
        // CPC: 3 clicks at 0.125 = 0.375 → 0.38
        assert_eq!(
            contract(Pricing::Cpc, "0.125").bill(3, 99).unwrap(),
            (3, 380_000)
        );
        // CPM: 1 impression at 5 per mille = 0.005 → 0.01 (half a cent up)
        assert_eq!(
            contract(Pricing::Cpm, "5").bill(99, 1).unwrap(),
            (1, 10_000)
        );
        // 0.004999 → 0.00
        assert_eq!(contract(Pricing::Cpm, "4.999").bill(0, 1).unwrap(), (1, 0));
        // 7 impressions at 2.5 per mille = 0.0175 → 0.02
        assert_eq!(
            contract(Pricing::Cpm, "2.5").bill(0, 7).unwrap(),
            (7, 20_000)
        );
        let k = contract(Pricing::Cpc, "1");
        assert!(!k.active_on(NaiveDate::from_ymd_opt(2024, 5, 31).unwrap()));
        assert!(k.active_on(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()));
        assert!(k.active_on(NaiveDate::from_ymd_opt(2024, 6, 30).unwrap()));
        assert!(!k.active_on(NaiveDate::from_ymd_opt(2024, 7, 1).unwrap()));
    }

    #[test]
    fn contract_files() {
        let ok = b"contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to\nk1,p1,bn-1,CPM,2.5,USD,2024-06-01,\n";
        let v = parse_contracts_csv("dim_contract.csv", ok).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].valid_to, None);
        assert_eq!(v[0].unit_price, 2_500_000);
        let bad = b"contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to\nk1,p1,bn-1,CPM,2.5,USD,2024-06-01,\nk2,p1,bn-1,CPX,2.5,USD,2024-06-01,\n";
        assert_eq!(
            parse_contracts_csv("dim_contract.csv", bad)
                .unwrap_err()
                .to_string(),
            "dim_contract.csv:3: dim_contract column pricing_model: 'CPX' is not CPC or CPM; fix the row in the dim_contract file"
        );
        let missing = b"contract_id,partner_id\nk1,p1\n";
        assert!(
            parse_contracts_csv("d.csv", missing)
                .unwrap_err()
                .to_string()
                .starts_with("d.csv:1: dim_contract has no column 'target_id'")
        );
    }
}
