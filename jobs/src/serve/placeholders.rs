//! `?` parameters, the DB-API `qmark` style of ADBC and flightsql-dbapi,
//! as DataFusion's `$1, $2, …`.
//!
//! The statement is tokenized (DataFusion's own SQL tokenizer), so a `?`
//! inside a string literal, a quoted name or a comment stays what it is;
//! only placeholder tokens are renumbered, at their places in the original
//! text, which is otherwise kept byte for byte.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tonic::Status;

/// `sql` with each `?` placeholder numbered `$1, $2, …` in order; `sql`
/// itself when it has none. Mixing `?` and `$n` is refused.
pub fn numbered(sql: &str) -> Result<String, Status> {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        // the planner reports the syntax error
        return Ok(sql.to_string());
    };
    let mut qmarks = Vec::new();
    let mut dollars = false;
    for t in &tokens {
        match &t.token {
            Token::Placeholder(p) if p == "?" => qmarks.push(t.span.start),
            Token::Placeholder(p) if p.starts_with('$') => dollars = true,
            _ => {}
        }
    }
    if qmarks.is_empty() {
        return Ok(sql.to_string());
    }
    if dollars {
        return Err(Status::invalid_argument(
            "the statement mixes ? and $1, $2, … parameters: use either, not both",
        ));
    }
    let offsets = line_starts(sql);
    let mut out = String::with_capacity(sql.len() + 2 * qmarks.len());
    let mut copied = 0;
    for (i, at) in qmarks.iter().enumerate() {
        let Some(pos) = byte_offset(sql, &offsets, at.line, at.column) else {
            return Ok(sql.to_string());
        };
        out.push_str(&sql[copied..pos]);
        out.push_str(&format!("${}", i + 1));
        copied = pos + 1;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// Byte offsets where each line starts.
fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The byte offset of 1-based `line` and character `column`, when it holds
/// a `?`.
fn byte_offset(sql: &str, lines: &[usize], line: u64, column: u64) -> Option<usize> {
    let start = *lines.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let col = usize::try_from(column).ok()?.checked_sub(1)?;
    let (pos, c) = sql[start..].char_indices().nth(col)?;
    (c == '?').then_some(start + pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_outside_literals() {
        let sql = "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = ? AND b IN (?, ?)";
        assert_eq!(
            numbered(sql).unwrap(),
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(numbered("SELECT 'é?' , ?").unwrap(), "SELECT 'é?' , $1");
        let plain = "SELECT $1, 'it''s?'";
        assert_eq!(numbered(plain).unwrap(), plain);
        let e = numbered("SELECT ?, $2").unwrap_err();
        assert!(e.message().contains("not both"), "{}", e.message());
    }
}
