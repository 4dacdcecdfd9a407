//! `/metrics` formats: which one a scraper asked for, and the classic
//! Prometheus text format 0.0.4 translated from the OpenMetrics text that
//! prometheus-client writes (it writes OpenMetrics only). Pure: text in,
//! text out.

use std::collections::HashMap;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Classic,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::Classic => CLASSIC,
        }
    }

    /// From the request's `Accept` values (joined with `,`): OpenMetrics
    /// when it is named with a quality at least that of the classic text;
    /// wildcards stand for the classic text, the default (curl, browsers,
    /// scrapers that predate OpenMetrics).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut classic) = (0.0f32, 0.0f32);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let (mut quality, mut version) = (1.0f32, None);
            for param in parts {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => quality = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            let version = version.as_deref();
            match media.as_str() {
                "application/openmetrics-text"
                    if matches!(version, None | Some("1.0.0" | "0.0.1")) =>
                {
                    openmetrics = openmetrics.max(quality);
                }
                "text/plain" if matches!(version, None | Some("0.0.4")) => {
                    classic = classic.max(quality);
                }
                "text/*" | "*/*" => classic = classic.max(quality),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= classic {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }
}

/// Why OpenMetrics text could not be translated; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    #[error(
        "line {line} of the OpenMetrics text: family `{family}` has type `{kind}`, which the classic text format 0.0.4 cannot express"
    )]
    UnsupportedType {
        line: usize,
        family: String,
        kind: String,
    },
    #[error("line {line} of the OpenMetrics text is not a well-formed sample: {text:?}")]
    Malformed { line: usize, text: String },
}

/// The OpenMetrics types prometheus-client writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Info,
    Unknown,
}

impl Kind {
    fn parse(kind: &str) -> Option<Kind> {
        Some(match kind {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "info" => Kind::Info,
            "unknown" => Kind::Unknown,
            _ => return None,
        })
    }

    fn classic_type(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::Info => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Unknown => "untyped",
        }
    }

    /// In 0.0.4 the HELP and TYPE lines name the samples: a counter's
    /// samples keep OpenMetrics' `_total`, an info's its `_info`.
    fn classic_name(self, family: &str) -> String {
        match self {
            Kind::Counter => format!("{family}_total"),
            Kind::Info => format!("{family}_info"),
            _ => family.to_owned(),
        }
    }

    /// `_created` samples have no place in 0.0.4.
    fn drops(self, family: &str, sample: &str) -> bool {
        matches!(self, Kind::Counter | Kind::Histogram | Kind::Summary)
            && sample.strip_prefix(family) == Some("_created")
    }
}

/// Translates OpenMetrics text into the classic text format 0.0.4: HELP and
/// TYPE renamed to the sample names, `info` as `gauge`, `unknown` as
/// `untyped`, HELP re-escaped, timestamps in milliseconds; `# UNIT`,
/// `# EOF`, `_created` samples and exemplars dropped.
pub fn to_classic(openmetrics: &str) -> Result<String, ClassicError> {
    let kinds = family_kinds(openmetrics)?;
    let kind_of = |family: &str| kinds.get(family).copied().unwrap_or(Kind::Unknown);
    let mut out = String::with_capacity(openmetrics.len());
    let mut family: Option<(&str, Kind)> = None;
    for (index, line) in openmetrics.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = kind_of(name).classic_name(name);
            out.push_str(&format!("# HELP {name} {}\n", classic_help(help)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or(rest);
            let kind = kind_of(name);
            family = Some((name, kind));
            let classic = kind.classic_name(name);
            out.push_str(&format!("# TYPE {classic} {}\n", kind.classic_type()));
        } else if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF`: not in 0.0.4.
        } else {
            let sample = Sample::parse(line).ok_or_else(|| ClassicError::Malformed {
                line: index + 1,
                text: line.to_owned(),
            })?;
            if family.is_some_and(|(name, kind)| kind.drops(name, sample.name)) {
                continue;
            }
            sample.write_classic(&mut out);
        }
    }
    Ok(out)
}

/// Every family's type, since a HELP line comes before its TYPE line.
fn family_kinds(openmetrics: &str) -> Result<HashMap<&str, Kind>, ClassicError> {
    let mut kinds = HashMap::new();
    for (index, line) in openmetrics.lines().enumerate() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
        let parsed = Kind::parse(kind).ok_or_else(|| ClassicError::UnsupportedType {
            line: index + 1,
            family: name.to_owned(),
            kind: kind.to_owned(),
        })?;
        kinds.insert(name, parsed);
    }
    Ok(kinds)
}

/// OpenMetrics escapes `\\`, `\n` and `\"` in HELP; 0.0.4 only `\\` and
/// `\n` (its parser rejects `\"`). prometheus-client writes HELP verbatim,
/// so a lone backslash is taken literally.
fn classic_help(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars().peekable();
    while let Some(c) = chars.next() {
        let literal = match (c, chars.peek()) {
            ('\\', Some('\\')) => Some('\\'),
            ('\\', Some('n')) => Some('\n'),
            ('\\', Some('"')) => Some('"'),
            _ => None,
        };
        let c = match literal {
            Some(l) => {
                chars.next();
                l
            }
            None => c,
        };
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One sample line: `name{labels} value [timestamp] [# exemplar]`.
struct Sample<'a> {
    name: &'a str,
    /// `{...}` as written: label escaping is the same in both formats.
    labels: &'a str,
    value: &'a str,
    /// Seconds, as OpenMetrics writes them.
    timestamp: Option<f64>,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Sample<'a>> {
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        let labels_end = if line[name_end..].starts_with('{') {
            name_end + labels_len(&line[name_end..])?
        } else {
            name_end
        };
        let labels = &line[name_end..labels_end];
        let rest = line[labels_end..].strip_prefix(' ')?;
        // An exemplar follows ` # `; label values cannot reach here.
        let rest = rest.split_once(" # ").map_or(rest, |(sample, _)| sample);
        let mut fields = rest.split(' ');
        let value = fields.next().filter(|v| !v.is_empty())?;
        let timestamp = match fields.next() {
            Some(t) => Some(t.parse::<f64>().ok()?),
            None => None,
        };
        if name.is_empty() || fields.next().is_some() {
            return None;
        }
        Some(Sample {
            name,
            labels,
            value,
            timestamp,
        })
    }

    fn write_classic(&self, out: &mut String) {
        out.push_str(self.name);
        out.push_str(self.labels);
        out.push(' ');
        out.push_str(self.value);
        if let Some(t) = self.timestamp {
            out.push_str(&format!(" {}", (t * 1000.0).round() as i64));
        }
        out.push('\n');
    }
}

/// Length of the `{...}` that starts `text`, quotes and escapes respected.
fn labels_len(text: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, '}') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.42 sends when it scrapes.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn negotiation_serves_openmetrics_only_to_those_who_ask() {
        use Format::*;
        for (accept, want) in [
            (Some(PROMETHEUS_ACCEPT), OpenMetrics),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; Version=1.0.0"),
                OpenMetrics,
            ),
            (
                Some("text/plain, application/openmetrics-text"),
                OpenMetrics,
            ),
            (None, Classic),
            (Some(""), Classic),
            (Some("*/*"), Classic),
            (Some("text/plain;version=0.0.4"), Classic),
            (Some("application/openmetrics-text;q=0.5, */*"), Classic),
            (Some("application/openmetrics-text;q=0"), Classic),
            (Some("application/openmetrics-text;q=bogus"), Classic),
            (Some("application/openmetrics-text;version=2.0.0"), Classic),
            (Some("application/json"), Classic),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
        assert!(
            Classic
                .content_type()
                .starts_with("text/plain; version=0.0.4")
        );
    }

    #[test]
    fn counters_are_named_by_their_samples_and_lose_created() {
        let om = "# HELP runs Backup runs.\n# TYPE runs counter\nruns_total{backup_job=\"a\"} 3\nruns_created{backup_job=\"a\"} 1700000000.5\n# EOF\n";
        assert_eq!(
            to_classic(om).unwrap(),
            "# HELP runs_total Backup runs.\n# TYPE runs_total counter\nruns_total{backup_job=\"a\"} 3\n"
        );
    }

    #[test]
    fn info_becomes_a_gauge_and_unknown_untyped() {
        let om = "# HELP vigil_build Build information.\n# TYPE vigil_build info\nvigil_build_info{version=\"0.1.0\"} 1\n# HELP odd Odd.\n# TYPE odd unknown\nodd 2.5\n# EOF\n";
        assert_eq!(
            to_classic(om).unwrap(),
            "# HELP vigil_build_info Build information.\n# TYPE vigil_build_info gauge\nvigil_build_info{version=\"0.1.0\"} 1\n# HELP odd Odd.\n# TYPE odd untyped\nodd 2.5\n"
        );
    }

    #[test]
    fn units_eof_exemplars_go_and_timestamps_turn_to_milliseconds() {
        let om = "# HELP d_seconds D.\n# TYPE d_seconds histogram\n# UNIT d_seconds seconds\nd_seconds_sum 1.5\nd_seconds_count 2\nd_seconds_bucket{le=\"+Inf\"} 2 # {trace=\"x # y\"} 1.0 1700000000.1\nd_seconds_created 1700000000.0\n# HELP g G.\n# TYPE g gauge\ng 7 1700000000.25\n# EOF\n";
        assert_eq!(
            to_classic(om).unwrap(),
            "# HELP d_seconds D.\n# TYPE d_seconds histogram\nd_seconds_sum 1.5\nd_seconds_count 2\nd_seconds_bucket{le=\"+Inf\"} 2\n# HELP g G.\n# TYPE g gauge\ng 7 1700000000250\n"
        );
    }

    #[test]
    fn help_is_escaped_the_classic_way() {
        let om = "# HELP h a \\\\ b \\\" c \\n d \" e \\x\n# TYPE h gauge\nh 1\n";
        assert_eq!(
            to_classic(om).unwrap(),
            "# HELP h a \\\\ b \" c \\n d \" e \\\\x\n# TYPE h gauge\nh 1\n"
        );
    }

    #[test]
    fn label_values_pass_through_with_their_escapes() {
        let line = r#"c_total{path="a} # {b",note="q\"uote \\ back\nline"} 4"#;
        let om = format!("# HELP c C.\n# TYPE c counter\n{line}\n");
        assert_eq!(
            to_classic(&om).unwrap(),
            format!("# HELP c_total C.\n# TYPE c_total counter\n{line}\n")
        );
    }

    #[test]
    fn what_cannot_be_translated_is_an_error_with_its_line() {
        let err = to_classic("# HELP s S.\n# TYPE s stateset\ns{s=\"a\"} 1\n").unwrap_err();
        assert_eq!(
            err,
            ClassicError::UnsupportedType {
                line: 2,
                family: "s".into(),
                kind: "stateset".into()
            }
        );
        assert!(err.to_string().contains("line 2"), "{err}");
        for bad in ["g{a=\"1\" 1", "g", "g 1 2 3", "g 1 notatime", "{a=\"1\"} 1"] {
            let err = to_classic(&format!("# TYPE g gauge\n{bad}\n")).unwrap_err();
            assert!(
                matches!(err, ClassicError::Malformed { line: 2, .. }),
                "{bad}: {err}"
            );
        }
    }
}
