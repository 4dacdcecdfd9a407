//! The page's only stylesheet, inline (no external assets). Under 600 px
//! each table row becomes a card whose cells are labelled by their
//! `data-label`, so the page reads on a 390 px phone without scrolling
//! sideways.

pub(super) const CSS: &str = r#"
:root{--pass:#2e7d32;--warn:#b45309;--fail:#c62828;--line:#e3e3e3;--muted:#666}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:84rem;padding:1rem;color:#1f1f1f;background:#fafafa}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:.4rem 1rem;padding:.8rem 1rem;border-radius:.5rem;background:#fff;border-left:.5rem solid var(--line)}
header.top.pass{border-left-color:var(--pass)} header.top.warn{border-left-color:var(--warn)} header.top.fail{border-left-color:var(--fail)}
h1{font-size:1.35rem;margin:0} h1 .svc{font-weight:400;color:var(--muted)}
h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
.meta{flex-basis:100%;margin:0;color:var(--muted);font-size:.88rem}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:.3rem;color:#fff;font-weight:600;font-size:.85rem;text-transform:uppercase;letter-spacing:.02em}
.badge.big{font-size:1rem;padding:.15rem .7rem}
.badge.pass{background:var(--pass)} .badge.warn{background:var(--warn)} .badge.fail{background:var(--fail)}
.badge.never{background:#8a8a8a}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.45rem .55rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;color:var(--muted);font-weight:600}
tr.job>td:first-child,tr.check>td:first-child{border-left:.3rem solid var(--line)}
tr.pass>td:first-child{border-left-color:var(--pass)} tr.warn>td:first-child{border-left-color:var(--warn)} tr.fail>td:first-child{border-left-color:var(--fail)}
small{display:block;color:var(--muted);font-size:.82rem}
.age{display:block}
small.bad,.bad{color:var(--fail)} .old{color:var(--warn);font-weight:600} .stale{color:var(--fail);font-weight:600}
pre.out{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;font:.83rem/1.35 ui-monospace,Menlo,Consolas,monospace;color:#333}
code{font:.85rem ui-monospace,Menlo,Consolas,monospace;overflow-wrap:anywhere}
p.allgood{background:#fff;padding:.6rem .8rem;border-left:.3rem solid var(--pass);margin:0}
p.empty{color:var(--muted);margin:0} .muted{color:var(--muted)}
details{margin-top:1.6rem} summary{font-weight:600;cursor:pointer}
footer{margin:2rem 0 1rem;color:var(--muted);font-size:.85rem}
a{color:#0b57d0}
@media (max-width:600px){
 body{padding:.5rem;font-size:14px}
 table.cards,table.cards tbody,table.cards tr,table.cards td{display:block;width:100%}
 table.cards thead{display:none}
 table.cards tr{margin:0 0 .7rem;border:1px solid var(--line);border-left:.35rem solid var(--line);border-radius:.4rem;padding:.3rem .6rem;background:#fff}
 table.cards tr.pass{border-left-color:var(--pass)} table.cards tr.warn{border-left-color:var(--warn)} table.cards tr.fail{border-left-color:var(--fail)}
 table.cards td,table.cards tr>td:first-child{border:0;padding:.2rem 0;display:grid;grid-template-columns:7.2rem 1fr;gap:.5rem}
 table.cards td::before{content:attr(data-label);font-weight:600;color:var(--muted);font-size:.8rem}
 table.cards td>div{min-width:0}
 table{background:transparent}
}
"#;
