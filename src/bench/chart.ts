/**
 * An SVG chart of the matrix, written by hand: grouped bars per (-c, -P) cell,
 * one bar per server, requests/s on top and server CPU per request below.
 * Both axes are logarithmic because the gapless mode at one client and the
 * in-memory mode at depth 16 differ by orders of magnitude.
 */
import { SERVERS, SERVER_ORDER, cellName, distinctCells, sameCell, type Cell, type MatrixRow, type Results, type ServerId } from './results.js';

const COLORS: Record<ServerId, string> = {
  'dolmeangi-memory': '#1f6fb4',
  'dolmeangi-durable': '#2a9d4b',
  'dolmeangi-reserve0': '#7b4fb8',
  redis: '#d62f2f',
  'redis-aof-always': '#f08a24',
};

const WIDTH = 960;
const PANEL_HEIGHT = 300;
const LEFT = 78;
const RIGHT = 16;
const TOP = 74;
const GAP = 56;
const BOTTOM = 40;

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (n: number) => String(Math.round(n * 10) / 10);

function short(n: number): string {
  if (n >= 1e6) return `${+(n / 1e6).toPrecision(3)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toPrecision(3)}k`;
  return `${+n.toPrecision(3)}`;
}

interface Panel {
  readonly title: string;
  readonly value: (m: MatrixRow) => number;
  readonly top: number;
}

export function renderChart(r: Results): string {
  const servers = SERVER_ORDER.filter((id) => r.matrix.some((m) => m.server === id));
  const cells = distinctCells(r.matrix);

  // The legend wraps (text width estimated from its length: no font metrics here); the panels go below it.
  const legend: string[] = [];
  let lx = LEFT;
  let ly = 50;
  for (const id of servers) {
    const w = 16 + SERVERS[id].label.length * 7 + 18;
    if (lx + w > WIDTH - RIGHT && lx > LEFT) {
      lx = LEFT;
      ly += 18;
    }
    legend.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${COLORS[id]}"/>`, `<text x="${lx + 16}" y="${ly + 10}">${esc(SERVERS[id].label)}</text>`);
    lx += w;
  }
  const top = ly + TOP - 50;
  const panels: Panel[] = [
    { title: 'requests per second (higher is better, log scale)', value: (m) => m.rps, top },
    { title: 'server CPU µs per request (lower is better, log scale)', value: (m) => m.cpuUsPerRequest, top: top + PANEL_HEIGHT + GAP },
  ];
  const height = top + 2 * PANEL_HEIGHT + GAP + BOTTOM;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${LEFT}" y="22" font-size="15" font-weight="bold">${esc(`dolmeangi GETSEQ vs Redis INCR, redis-benchmark, ${r.date.slice(0, 10)}`)}</text>`,
    `<text x="${LEFT}" y="40" fill="#555">${esc(`${r.machine.cores} cores, ${r.machine.cpuModel}; node ${r.versions.node}, redis ${r.versions.redis ?? 'n/a'}, dolmeangi ${r.versions.dolmeangi}`)}</text>`,
    ...legend,
  );
  for (const p of panels) out.push(...panel(p, r.matrix, servers, cells));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function panel(p: Panel, rows: readonly MatrixRow[], servers: readonly ServerId[], cells: readonly Cell[]): string[] {
  const values = rows.map(p.value).filter((v) => v > 0);
  const out: string[] = [];
  const plotW = WIDTH - LEFT - RIGHT;
  // Room above the highest bar for its rotated value label.
  const plotTop = p.top + 50;
  const plotH = PANEL_HEIGHT - 50 - 24;
  const bottom = plotTop + plotH;
  out.push(`<text x="${LEFT}" y="${p.top + 12}" font-weight="bold">${esc(p.title)}</text>`);
  if (values.length === 0) return out;
  const lo = Math.floor(Math.log10(Math.min(...values)));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...values))));
  const y = (v: number) => bottom - ((Math.log10(v) - lo) / (hi - lo)) * plotH;
  for (let d = lo; d <= hi; d++) {
    const yy = num(y(10 ** d));
    out.push(
      `<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`,
      `<text x="${LEFT - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle" fill="#444">${short(10 ** d)}</text>`,
    );
  }
  out.push(`<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${bottom}" y2="${bottom}" stroke="#888"/>`);
  const groupW = plotW / cells.length;
  const barW = (groupW * 0.8) / Math.max(1, servers.length);
  cells.forEach((cell, ci) => {
    const gx = LEFT + ci * groupW + groupW * 0.1;
    out.push(`<text x="${num(LEFT + (ci + 0.5) * groupW)}" y="${bottom + 17}" text-anchor="middle">${cellName(cell)}</text>`);
    servers.forEach((id, si) => {
      const m = rows.find((x) => x.server === id && sameCell(x, cell));
      if (m === undefined || !(p.value(m) > 0)) return;
      const v = p.value(m);
      const x = gx + si * barW;
      const top = y(v);
      out.push(
        `<rect x="${num(x + 1)}" y="${num(top)}" width="${num(barW - 2)}" height="${num(bottom - top)}" fill="${COLORS[id]}"><title>${esc(`${SERVERS[id].label}, ${cellName(cell)}: ${short(v)}`)}</title></rect>`,
        `<text transform="translate(${num(x + barW / 2 + 3)},${num(top - 4)}) rotate(-90)" font-size="10" fill="#333">${short(v)}</text>`,
      );
    });
  });
  return out;
}
