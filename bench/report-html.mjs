// The bench's pictures, as one self-contained HTML page (inline SVG, no script, nothing fetched): time to fresh per
// Machine for every strategy, and reads served over time during a burst and during a restart-type change.
// `renderHtml(result)` takes bench.mjs's JSON.

const COLORS = {engine: '#1f6feb', 'engine-nodeps': '#0a7a75', 'engine-new': '#8250df', baseline: '#cf222e', floor: '#57606a', ord: '#1f6feb', fra: '#2da44e', nrt: '#bf8700'}
const NAMES = {engine: 'engine (process that has run before)', 'engine-nodeps': 'engine, no dependents lookup', 'engine-new': "engine (a new process's first run)", baseline: "the article's handler"}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'})[c])

/**
 * A chart: `series` of `{name, color, points: [[x, y], …], dots?}` on linear axes.
 * @param {{title: string, xLabel: string, yLabel: string, series: {name: string, color: string, points: number[][], dots?: boolean}[], yMax?: number, xTicks?: string[], note?: string}} o
 */
function chart({title, xLabel, yLabel, series, yMax, xTicks, note}) {
  const W = 760
  const H = 300
  const m = {l: 60, r: 20, t: 56, b: 50}
  const all = series.flatMap((s) => s.points).filter((p) => p[1] !== null && Number.isFinite(p[1]))
  const xMax = Math.max(1, ...all.map((p) => p[0]))
  const top = yMax ?? niceMax(Math.max(1, ...all.map((p) => p[1])))
  const x = (v) => m.l + (v / xMax) * (W - m.l - m.r)
  const y = (v) => H - m.b - (v / top) * (H - m.t - m.b)
  const parts = [`<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`]
  parts.push(`<text x="${m.l}" y="18" class="t">${esc(title)}</text>`)
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}" class="g"/><text x="${m.l - 6}" y="${y(v) + 4}" class="a" text-anchor="end">${fmt(v)}</text>`)
  }
  parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 8}" class="a" text-anchor="middle">${esc(xLabel)}</text>`)
  parts.push(`<text x="14" y="${(m.t + H - m.b) / 2}" class="a" text-anchor="middle" transform="rotate(-90 14 ${(m.t + H - m.b) / 2})">${esc(yLabel)}</text>`)
  if (xTicks) {
    xTicks.forEach((label, i) => {
      if (label) parts.push(`<text x="${x(i)}" y="${H - m.b + 14}" class="a" text-anchor="middle">${esc(label)}</text>`)
    })
  } else {
    for (let i = 0; i <= 4; i++) parts.push(`<text x="${x((xMax * i) / 4)}" y="${H - m.b + 14}" class="a" text-anchor="middle">${fmt((xMax * i) / 4)}</text>`)
  }
  for (const s of series) {
    const pts = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]))
    if (s.dots) {
      for (const p of pts) parts.push(`<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="3" fill="${s.color}"/>`)
    } else if (pts.length) {
      parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.8" points="${pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')}"/>`)
    }
  }
  series.forEach((s, i) => {
    const [lx, ly] = [m.l + 10 + (i % 3) * 230, 26 + Math.floor(i / 3) * 14]
    parts.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${s.color}"/><text x="${lx + 14}" y="${ly}" class="a">${esc(s.name)}</text>`)
  })
  parts.push('</svg>')
  return `<figure>${parts.join('')}${note ? `<figcaption>${esc(note)}</figcaption>` : ''}</figure>`
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v))
  return [1, 2, 2.5, 5, 10].map((k) => k * p).find((c) => c >= v) ?? v
}

const fmt = (v) => (v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, ''))

/** Time to fresh per Machine (median over the publishes), Machines by region. */
function freshPerMachine(row) {
  const ids = Object.keys(row.publish.engine.byMachine).sort((a, b) => {
    const ra = row.publish.engine.byMachine[a].region
    const rb = row.publish.engine.byMachine[b].region
    return ra === rb ? a.localeCompare(b) : ra.localeCompare(rb)
  })
  const ticks = ids.map((id, i) => (i === 0 || row.publish.engine.byMachine[ids[i - 1]].region !== row.publish.engine.byMachine[id].region ? row.publish.engine.byMachine[id].region : ''))
  const series = ['engine', 'engine-nodeps', 'engine-new', 'baseline']
    .filter((k) => row.publish[k])
    .map((k) => ({name: NAMES[k], color: COLORS[k], dots: true, points: ids.map((id, i) => [i, row.publish[k].byMachine[id]?.p50 ?? null])}))
  series.push({name: `one POST to ${row.floor.farthest.region} (p50)`, color: COLORS.floor, points: [[0, row.floor.farthest.p50], [ids.length - 1, row.floor.farthest.p50]]})
  return chart({
    title: `${row.machines} Machines: time from publish to serving the new revision, per Machine (median of ${row.publish.engine.publishes} publishes)`,
    xLabel: 'Machines, by region',
    yLabel: 'ms',
    xTicks: ticks,
    series,
    note: "The article's handler pushes to one Machine and restarts the rest: they are fresh once they have booted again.",
  })
}

/** Share of reads served over time. */
function servedOverTime(title, runs, note) {
  const series = []
  for (const [key, run] of runs) {
    if (!run?.timeline?.length) continue
    if (key.startsWith('region:')) {
      const [, strategy, region] = key.split(':')
      series.push({name: `${NAMES[strategy] ?? strategy}: ${region}`, color: COLORS[region], points: run.timeline.map((p) => [p.t / 1000, p.byRegion[region] ? p.byRegion[region][0] / p.byRegion[region][1] : null])})
    } else {
      series.push({name: NAMES[key] ?? key, color: COLORS[key], points: run.timeline.map((p) => [p.t / 1000, p.total ? p.served / p.total : null])})
    }
  }
  return chart({title, xLabel: 's since the first event', yLabel: 'share of reads served', yMax: 1, series, note})
}

export function renderHtml(result) {
  const sections = []
  for (const row of result.fleet) {
    sections.push(`<h2>${row.machines} Machines</h2>`)
    sections.push(freshPerMachine(row))
    const burst = row.bursts.at(-1)
    if (burst) {
      sections.push(servedOverTime(`${row.machines} Machines, a burst of ${burst.n} publishes: reads served over time`, [['engine', burst.engine], ['baseline', burst.baseline]], 'Probes read every Machine every 100 ms; a read fails while a Machine is restarting (or, on this one-process simulator, when the CPU is saturated).'))
    }
    const roll = row.restartChange
    if (roll.engine) {
      const regions = Object.keys(roll.engine.leastServingByRegion)
      sections.push(servedOverTime(`${row.machines} Machines, a restart-type change: reads served over time, per region (engine)`, regions.map((r) => [`region:engine:${r}`, roll.engine]), `Least share serving per region: ${regions.map((r) => `${r} ${(roll.engine.leastServingByRegion[r] * 100).toFixed(0)}%`).join(', ')}.`))
      sections.push(servedOverTime(`${row.machines} Machines, a restart-type change: reads served over time`, [['engine', roll.engine], ['baseline', roll.baseline]]))
    }
  }
  const goals = result.goals.map((g) => `<tr><td>${esc(g.goal)}</td><td>${esc(g.target)}</td><td>${esc(g.figure)}</td><td class="${g.met ? 'ok' : 'no'}">${g.met === null ? '-' : g.met ? 'met' : 'missed'}</td></tr>`).join('')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sanity-fly-sync bench</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;max-width:820px;margin:24px auto;padding:0 12px;color:#1f2328}
h1{font-size:20px}h2{font-size:16px;margin-top:32px}figure{margin:16px 0}figcaption{color:#57606a;font-size:12px}
svg .t{font-size:13px;font-weight:600}svg .a{font-size:11px;fill:#57606a}svg .g{stroke:#d0d7de;stroke-width:1}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
.ok{color:#1a7f37}.no{color:#cf222e;font-weight:600}
</style></head><body>
<h1>sanity-fly-sync bench</h1>
<p>${esc(`${result.host.nproc} × ${result.host.cpu}, Node ${result.host.node}, ${result.startedAt}, load average ${result.host.loadavgStart.toFixed(2)} at start. ${result.command}`)}</p>
<table><tr><th>goal</th><th>target</th><th>figure</th><th></th></tr>${goals}</table>
${sections.join('\n')}
</body></html>
`
}
