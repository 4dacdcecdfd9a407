//! An HTML writer that cannot emit a dynamic string unescaped: markup is
//! `&'static str`, everything else goes through [`Html::text`], which
//! redacts it (URL passwords, tokens, the config's secret values) and then
//! escapes it.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::core::redact::redact_text;
use crate::core::units::compact_duration;

pub(super) struct Html<'a> {
    out: String,
    secrets: &'a [String],
}

impl<'a> Html<'a> {
    pub fn new(secrets: &'a [String]) -> Self {
        Html {
            out: String::with_capacity(16 * 1024),
            secrets,
        }
    }

    /// Markup written by this module, never data.
    pub fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.out.push_str(markup);
        self
    }

    /// Data: redacted, then escaped (text and attribute values alike).
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&redact_text(text, self.secrets), &mut self.out);
        self
    }

    /// `<td data-label="label"><div>` … `</div></td>`: the label heads
    /// the cell when the table is stacked into cards on a narrow screen
    /// (the `div` keeps the content one grid item beside it).
    pub fn cell(&mut self, label: &'static str, fill: impl FnOnce(&mut Self)) -> &mut Self {
        self.raw("<td data-label=\"").raw(label).raw("\"><div>");
        fill(self);
        self.raw("</div></td>")
    }

    /// A coloured status word, e.g. `<span class="badge fail">fail</span>`.
    pub fn badge(&mut self, class: &'static str, word: &'static str) -> &mut Self {
        self.raw("<span class=\"badge ")
            .raw(class)
            .raw("\">")
            .raw(word)
            .raw("</span>")
    }

    /// `<time>` with the machine-readable instant and a short UTC reading.
    pub fn time(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.raw("<time datetime=\"")
            .text(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .raw("\">")
            .text(&t.format("%Y-%m-%d %H:%M UTC").to_string())
            .raw("</time>")
    }

    /// `<small>` + text + `</small>` on its own line.
    pub fn note(&mut self, text: &str) -> &mut Self {
        self.raw("<small>").text(text).raw("</small>")
    }

    pub fn finish(self) -> String {
        self.out
    }
}

pub(super) fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// `5m 3s` between `then` and `now` (never negative).
pub(super) fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    compact_duration((now - then).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_redacted_then_escaped() {
        let secrets = vec!["s3cr3t-key".to_owned()];
        let mut h = Html::new(&secrets);
        h.raw("<p title=\"")
            .text("a\"b")
            .raw("\">")
            .text("<b>&' postgres://u:pw9@db/x key=s3cr3t-key</b>")
            .raw("</p>");
        assert_eq!(
            h.finish(),
            "<p title=\"a&quot;b\">&lt;b&gt;&amp;&#39; postgres://u:***@db/x key=***&lt;/b&gt;</p>"
        );
    }
}
