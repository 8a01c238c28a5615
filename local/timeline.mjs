// The simulation's HTML timeline: one row per Machine (grouped by region) with its states over time from the
// emulator, the events as vertical lines, and a dot where each Machine became fresh after each event; below it,
// freshness per region and event.

const COLORS = {
  started: '#2e9e5b',
  'started-critical': '#a5c94a',
  starting: '#f0a030',
  stopping: '#f0a030',
  restarting: '#f0a030',
  stopped: '#9aa0a6',
  suspended: '#5b8def',
  failed: '#d93025',
}
const color = (state, checks) => (state === 'started' && checks === 'critical' ? COLORS['started-critical'] : COLORS[state] ?? '#c0c0c0')
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'})[c])

export function renderTimeline(result) {
  const {startedAt, endedAt, steps, timelines, machineRegions} = result
  const ids = Object.keys(machineRegions).sort((a, b) => machineRegions[a].localeCompare(machineRegions[b]) || a.localeCompare(b))
  const width = 1100
  const left = 150
  const row = 16
  const top = 30
  const span = Math.max(1, endedAt - startedAt)
  const x = (t) => left + ((Math.min(Math.max(t, startedAt), endedAt) - startedAt) / span) * (width - left - 10)
  const height = top + ids.length * row + 20
  const parts = []
  ids.forEach((id, i) => {
    const y = top + i * row
    parts.push(`<text x="4" y="${y + 11}" font-size="11">${esc(machineRegions[id])} ${esc(id)}</text>`)
    const entries = (timelines[id] ?? []).filter((e) => e.at <= endedAt)
    entries.forEach((e, k) => {
      const from = Math.max(e.at, startedAt)
      const to = k + 1 < entries.length ? entries[k + 1].at : endedAt
      if (to < startedAt) return
      parts.push(`<rect x="${x(from).toFixed(1)}" y="${y}" width="${Math.max(0.5, x(to) - x(from)).toFixed(1)}" height="${row - 3}" fill="${color(e.state, e.checks)}"><title>${esc(id)}: ${esc(e.state)} (checks ${esc(e.checks)}) from +${from - startedAt} ms</title></rect>`)
    })
    for (const step of steps) {
      const ms = step.fresh[id]
      if (ms !== undefined) {
        parts.push(`<circle cx="${x(step.startedAt + ms).toFixed(1)}" cy="${y + 6}" r="2.5" fill="#111"><title>${esc(id)} fresh after "${esc(step.label)}": +${ms} ms</title></circle>`)
      }
      for (const c of step.caughtUp.filter((c) => c.machine === id)) {
        parts.push(`<circle cx="${x(c.at).toFixed(1)}" cy="${y + 6}" r="4" fill="none" stroke="#d93025" stroke-width="2"><title>${esc(id)} caught up by reconciliation after "${esc(step.label)}": stale ${c.staleMs} ms</title></circle>`)
      }
    }
  })
  for (const step of steps) {
    const sx = x(step.startedAt).toFixed(1)
    parts.push(`<line x1="${sx}" x2="${sx}" y1="${top - 12}" y2="${height - 16}" stroke="#333" stroke-dasharray="3,3"/>`)
    parts.push(`<text x="${sx}" y="${top - 16}" font-size="11" text-anchor="middle"><title>${esc(step.label)}</title>${step.index}</text>`)
    if (step.killedAt) {
      const kx = x(step.killedAt).toFixed(1)
      parts.push(`<line x1="${kx}" x2="${kx}" y1="${top - 12}" y2="${height - 16}" stroke="#d93025" stroke-width="2"><title>the run of "${esc(step.label)}" killed at its timeout; the next run finishes its roll</title></line>`)
    }
  }
  const regions = [...new Set(Object.values(machineRegions))].sort()
  const freshRows = steps
    .map((s) => {
      const cells = regions.map((r) => {
        const times = Object.entries(s.fresh).filter(([id]) => machineRegions[id] === r).map(([, ms]) => ms)
        return `<td>${times.length ? Math.max(...times) + ' ms' : '–'}</td>`
      })
      const caught = s.caughtUp.length ? `${s.caughtUp.length} (≤ ${Math.max(...s.caughtUp.map((c) => c.staleMs))} ms)` : '0'
      const deps = s.dependents.checks ? `${s.dependents.freshByPush}/${s.dependents.checks}` : '–'
      const live = s.live ? `${s.live.freshByTags}/${s.live.checks - s.live.unchanged}${s.live.stale.length ? ` (${s.live.stale.length} stale)` : ''}` : '–'
      return `<tr><td>${s.index}</td><td>${esc(s.label)}</td>${cells.join('')}<td>${deps}</td><td>${live}</td><td>${caught}</td><td>${s.stale.length}</td><td>${s.restarts}</td><td>${(s.availability * 100).toFixed(1)}%</td></tr>`
    })
    .join('\n')
  const legend = Object.entries(COLORS)
    .map(([k, c]) => `<span style="display:inline-block;width:12px;height:12px;background:${c};margin:0 4px 0 12px"></span>${esc(k)}`)
    .join('')
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>sanity-fly-sync simulation</title>
<style>body{font:13px system-ui,sans-serif;margin:20px}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}td:nth-child(2){text-align:left}</style>
</head><body>
<h1>sanity-fly-sync simulation</h1>
<p>${result.machines} Machines over ${esc(result.regions.join(', '))}; faults: ${esc(result.faults)}; ${result.ok ? 'every started Machine fresh after every event' : 'some Machines stale without an explanation'}.
Dashed lines: events (hover for the label); a red line: a run killed at its timeout. Dots: the moment each Machine held the new content by push; red rings: caught up by reconciliation after a lost push.
"Dependent pages": pages that show a changed document through a reference (a post and its author), read before the change; fresh by push = (Machine, page) pairs the push's invalidation dropped and that then showed the new content.
"Live pages": pages rendered from a query and cached under its sync tags (as next-sanity's sanityFetch does), dropped by the sync-tag Function's push.</p>
<div>${legend}</div>
<svg width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg">${parts.join('\n')}</svg>
<h2>Freshness per region (slowest Machine, from the event)</h2>
<table><tr><th>#</th><th>event</th>${regions.map((r) => `<th>${esc(r)}</th>`).join('')}<th>dependent pages fresh by push</th><th>live pages fresh by sync tags</th><th>caught up (stale)</th><th>stale</th><th>restarts</th><th>reads served</th></tr>
${freshRows}
</table>
</body></html>
`
}
