//! A drill's `check_sql`: each query must return exactly one row of one
//! boolean column holding true; anything else fails the drill naming the
//! query and what it returned.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::DrillError;

pub use crate::config::drill_check_queries as queries;

/// What one query returned, as far as the verdict needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Rows(usize),
    Columns(usize),
    /// A single value of another type than boolean.
    NotBoolean(String),
    Value(Option<bool>),
}

/// `None` when the answer is a single true; else what the query returned.
pub fn verdict(answer: &Answer) -> Option<String> {
    match answer {
        Answer::Value(Some(true)) => None,
        Answer::Value(Some(false)) => Some("returned false".into()),
        Answer::Value(None) => Some("returned NULL".into()),
        Answer::Rows(n) => Some(format!("returned {n} rows, not one")),
        Answer::Columns(n) => Some(format!("returned {n} columns, not one boolean")),
        Answer::NotBoolean(t) => Some(format!("returned a {t} value, not a boolean")),
    }
}

/// Runs every query in order; the first that does not return a single
/// true fails the drill.
pub async fn run(client: &Client, queries: &[String]) -> Result<(), DrillError> {
    for query in queries {
        let failed = |found: String| DrillError::Check {
            query: query.clone(),
            found,
        };
        let rows = client
            .query(query.as_str(), &[])
            .await
            .map_err(|e| failed(format!("failed: {}", crate::core::redact::error_chain(&e))))?;
        if let Some(found) = verdict(&answer(&rows)) {
            return Err(failed(found));
        }
    }
    Ok(())
}

fn answer(rows: &[tokio_postgres::Row]) -> Answer {
    let [row] = rows else {
        return Answer::Rows(rows.len());
    };
    let columns = row.columns();
    if columns.len() != 1 {
        return Answer::Columns(columns.len());
    }
    if *columns[0].type_() != Type::BOOL {
        return Answer::NotBoolean(columns[0].type_().name().to_owned());
    }
    Answer::Value(row.get::<_, Option<bool>>(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_true_passes_and_anything_else_is_named() {
        assert_eq!(verdict(&Answer::Value(Some(true))), None);
        for (answer, said) in [
            (Answer::Value(Some(false)), "returned false"),
            (Answer::Value(None), "returned NULL"),
            (Answer::Rows(0), "returned 0 rows, not one"),
            (Answer::Rows(2), "returned 2 rows, not one"),
            (Answer::Columns(2), "returned 2 columns, not one boolean"),
            (
                Answer::NotBoolean("text".into()),
                "returned a text value, not a boolean",
            ),
        ] {
            assert_eq!(verdict(&answer).as_deref(), Some(said), "{answer:?}");
        }
    }

    #[test]
    fn no_check_sql_runs_the_default_query() {
        assert_eq!(queries(&[]), [crate::config::DEFAULT_DRILL_CHECK]);
        let own = vec!["SELECT count(*) > 0 FROM orders".to_owned()];
        assert_eq!(queries(&own), own);
    }
}
