// The console's dashboard: reports with drill-down and a chart, and forms for every catalog
// object, over the JSON API `query serve` answers (docs/console.md). Plain DOM, no framework,
// nothing fetched from anywhere but this server. Data only ever reaches the page as text
// (textContent, attribute values), never as HTML.
'use strict';

const TOKEN_KEY = 'clicktracker.token';
const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------
// DOM helpers

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function s(tag, attrs, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

function clear(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
  return el;
}

// ---------------------------------------------------------------------------------------
// The token and the API

const auth = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY),
  set(token, keep) {
    this.clear();
    (keep ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
  },
};

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `The console answered ${status}`);
    this.status = status;
    this.field = body && body.field;
  }
}

/// One API request; its JSON, or with `full` `{ json, etag }`, or with `lines` the objects of
/// its JSON lines. `token` signs in with another token than the stored one (and a 401 then
/// does not sign out); `headers` adds headers.
async function api(method, path, body, { token, headers: extra, full, lines } = {}) {
  const headers = { Authorization: 'Bearer ' + (token || auth.get() || ''), ...extra };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch('/api/v1/' + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, { error: 'The console cannot be reached (' + e.message + ').' });
  }
  const text = await r.text();
  if (lines && r.ok) return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = { error: text };
    }
  }
  if (r.status === 401 && !token) {
    auth.clear();
    signIn('Your session has ended: sign in again.');
  }
  if (!r.ok) throw new ApiError(r.status, json);
  return full ? { json, etag: r.headers.get('ETag') } : json;
}

// ---------------------------------------------------------------------------------------
// The click and conversion logs: the newest events, one row each

const LOG_COLS = {
  clicks: [
    ['ts', 'Time'], ['kind', 'Kind'], ['campaign_id', 'Campaign'], ['offer_id', 'Offer'],
    ['offer_link_id', 'Offer link'], ['landing_page_id', 'Landing page'], ['country', 'Country'],
    ['device_type', 'Device'], ['os_family', 'OS'], ['browser_family', 'Browser'], ['cost', 'Cost'],
    ['ip', 'IP'], ['event_id', 'Event id'], ['click_id', 'Visit'],
  ],
  conversions: [
    ['ts', 'Time'], ['status', 'Status'], ['conversion_type', 'Type'], ['payout', 'Payout'],
    ['txid', 'Transaction'], ['campaign_id', 'Campaign'], ['offer_id', 'Offer'],
    ['offer_link_id', 'Offer link'], ['country', 'Country'], ['method', 'Sent as'], ['auth', 'Proof'],
    ['click_id', 'Click id'], ['event_id', 'Event id'],
  ],
};
const LOG_LIMIT = 200;

async function logView(view, which, p, gen) {
  if (!Object.hasOwn(LOG_COLS, which)) which = 'clicks';
  document.title = 'Log \u00b7 Clicktracker';
  const campaign = p.get('campaign') || '';
  // Yesterday and today (UTC): the newest rows without reading the whole store.
  const q = new URLSearchParams({ limit: String(LOG_LIMIT), from: daysAgo(1) });
  if (campaign) q.set('campaign', campaign);
  const rows = await api('GET', `log/${which}?` + q.toString(), undefined, { lines: true });
  if (gen !== generation) return;
  const cols = LOG_COLS[which];
  const cell = (key, v) => {
    if (v == null || v === '') return h('span', { class: 'muted' }, '\u2014');
    if (key === 'cost' || key === 'payout') return moneyFmt.format(v);
    if (key === 'ts') return String(v).replace('T', ' ').replace(/(\.\d+)?Z?$/, '');
    return h('span', { class: /_id$|^ip$/.test(key) ? 'mono' : null }, String(v));
  };
  const tab = (w, label) => h('a', { class: 'button ' + (w === which ? 'primary' : 'ghost'), href: '#/log/' + w + (campaign ? '?campaign=' + enc(campaign) : '') }, label);
  const filter = h('input', { type: 'text', id: 'log-campaign', value: campaign, placeholder: 'campaign id', 'aria-label': 'Campaign' });
  filter.addEventListener('change', () => {
    const v = filter.value.trim();
    location.hash = '#/log/' + which + (v ? '?campaign=' + enc(v) : '');
  });
  clear(view,
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', {}, 'Log'), h('p', { class: 'muted' }, which === 'clicks'
        ? `The newest ${LOG_LIMIT} visits and click-throughs of yesterday and today (UTC), as they came.`
        : `The newest ${LOG_LIMIT} conversion reports of yesterday and today (UTC), as they came (refused ones too; Reports count what the rules let through).`)),
      h('div', { class: 'head-actions' },
        tab('clicks', 'Clicks'), tab('conversions', 'Conversions'),
        h('button', { class: 'ghost', onclick: () => route() }, 'Refresh'))),
    h('div', { class: 'toolbar card' },
      h('div', { class: 'field' }, h('label', { for: 'log-campaign' }, 'Campaign'), filter)),
    h('section', { class: 'card' },
      h('div', { class: 'table-wrap' },
        h('table', { class: 'list log', id: 'log' },
          h('thead', {}, h('tr', {}, cols.map(([, label]) => h('th', {}, label)))),
          h('tbody', {}, rows.length
            ? rows.map((r) => h('tr', {}, cols.map(([key]) => h('td', {}, cell(key, r[key])))))
            : h('tr', {}, h('td', { colspan: cols.length, class: 'empty' }, 'Nothing logged yet.')))))));
}

// ---------------------------------------------------------------------------------------
// What the catalog holds, and how each kind is edited

const PATH = {
  fields: [
    { key: 'weight', label: 'Weight', type: 'int', min: 1, placeholder: '1' },
    { key: 'landing_page', label: 'Landing page', type: 'ref', kind: 'landing_pages', none: 'Direct to the offer' },
    {
      key: 'offers', label: 'Offers', type: 'list', add: 'Add offer', itemLabel: 'Offer', compact: true,
      item: {
        fields: [
          { key: 'offer', label: 'Offer', type: 'ref', kind: 'offers' },
          { key: 'weight', label: 'Weight', type: 'int', min: 1, placeholder: '1' },
        ],
      },
      fresh: () => ({}),
    },
  ],
};

const RULE = {
  fields: [
    { key: 'countries', label: 'Countries', type: 'csv', placeholder: 'US, CA', hint: 'ISO codes, comma-separated' },
    { key: 'devices', label: 'Devices', type: 'csv', placeholder: 'mobile, tablet' },
    { key: 'os', label: 'Operating systems', type: 'csv', placeholder: 'Android, iOS' },
    { key: 'browsers', label: 'Browsers', type: 'csv', placeholder: 'Chrome' },
    { key: 'languages', label: 'Languages', type: 'csv', placeholder: 'en, de' },
    { key: 'bot', label: 'Visitors', type: 'tristate', options: [['', 'Anyone'], ['true', 'Bots only'], ['false', 'People only']] },
    { key: 'paths', label: 'Paths', type: 'list', add: 'Add path', itemLabel: 'Path', item: PATH, fresh: () => ({ offers: [{}] }) },
  ],
};

const KINDS = {
  campaigns: {
    label: 'Campaigns', one: 'campaign', dim: 'campaign',
    blurb: 'A campaign URL goes into the traffic source; each visit follows a path to a landing page or an offer.',
    fields: [
      { key: 'name', label: 'Name', type: 'text', placeholder: 'Push · US · Sweepstakes' },
      { key: 'traffic_source', label: 'Traffic source', type: 'ref', kind: 'traffic_sources', required: true },
      { key: 'category', label: 'Category', type: 'text', placeholder: 'REFERRAL', hint: 'A label to group campaigns by; the conversion feed shows it' },
      { key: 'cost_model', label: 'Cost model', type: 'select', options: [['', 'CPC: per visit'], ['cpm', 'CPM: per thousand visits'], ['cpa', 'CPA: per conversion'], ['revshare', 'RevShare: a share of the revenue']] },
      { key: 'cost', label: 'Cost', type: 'number', placeholder: '0.00', hint: 'Per visit, per thousand visits, per conversion, or a share 0 to 1, by the cost model; a source\u2019s cost parameter overrides a per-visit cost' },
      { key: 'paths', label: 'Paths', type: 'list', add: 'Add path', itemLabel: 'Path', item: PATH, fresh: () => ({ offers: [{}] }) },
      { key: 'rules', label: 'Rules', type: 'list', add: 'Add rule', itemLabel: 'Rule', item: RULE, fresh: () => ({ paths: [{ offers: [{}] }] }), hint: 'The first rule a visit matches chooses its paths; others take the paths above' },
    ],
  },
  offers: {
    label: 'Offers', one: 'offer', dim: 'offer',
    blurb: 'What the visitor is sent to; its URL carries the click id for the network to send back.',
    fields: [
      { key: 'name', label: 'Name', type: 'text' },
      { key: 'network', label: 'Affiliate network', type: 'ref', kind: 'affiliate_networks', none: 'None' },
      { key: 'url', label: 'URL', type: 'text', wide: true, placeholder: 'https://offer.example/?aff_sub={click_id}', hint: 'Macros: {click_id}, {campaign_id}, {country}, and the source\u2019s parameters; leave empty when the offer has links' },
      { key: 'payout', label: 'Default payout', type: 'number', placeholder: '0.00', hint: 'Counted when a conversion carries no payout' },
      {
        key: 'links', label: 'Links', type: 'list', add: 'Add link', itemLabel: 'Link', hint: 'Several URLs for the offer instead of one, each visitor sent to one by weight',
        item: {
          fields: [
            { key: 'id', label: 'Id', type: 'text', placeholder: 'blog' },
            { key: 'name', label: 'Name', type: 'text' },
            { key: 'url', label: 'URL', type: 'text', wide: true, placeholder: 'https://offer.example/blog?aff_sub={click_id}' },
            { key: 'weight', label: 'Weight', type: 'int', min: 1, placeholder: '1' },
          ],
        },
        fresh: () => ({}),
      },
    ],
  },
  landing_pages: {
    label: 'Landing pages', one: 'landing page', dim: 'landing_page',
    blurb: 'A page shown before the offer; its call to action goes through the click URL.',
    fields: [
      { key: 'name', label: 'Name', type: 'text' },
      { key: 'url', label: 'URL', type: 'text', wide: true, placeholder: 'https://lander.example/?cid={click_id}' },
    ],
  },
  affiliate_networks: {
    label: 'Affiliate networks', one: 'affiliate network', dim: 'network',
    blurb: 'Where offers come from; its postback URL goes into the network to report conversions.',
    fields: [
      { key: 'name', label: 'Name', type: 'text' },
      { key: 'postback_token', label: 'Postback token', type: 'secret', hint: 'Postbacks must carry it to count; leave empty to accept any' },
      { key: 'pixels', label: 'Pixel conversions', type: 'select', options: [['', 'Default (off with a token)'], ['off', 'Do not count'], ['default_payout', 'Count with the offer\u2019s payout'], ['payout', 'Count with their own payout']] },
      { key: 'click_id_macro', label: 'Network\u2019s click id macro', type: 'text', placeholder: '{aff_sub}' },
      { key: 'payout_macro', label: 'Network\u2019s payout macro', type: 'text', placeholder: '{payout}' },
      { key: 'txid_macro', label: 'Network\u2019s transaction id macro', type: 'text', placeholder: '{transaction_id}' },
      { key: 'status_macro', label: 'Network\u2019s status macro', type: 'text', placeholder: '{status}' },
      { key: 'template', label: 'Template', type: 'text', placeholder: 'everflow', hint: 'A built-in preset (query templates lists them)' },
    ],
  },
  traffic_sources: {
    label: 'Traffic sources', one: 'traffic source', dim: 'traffic_source',
    blurb: 'Where visits come from; its parameters become report dimensions.',
    fields: [
      { key: 'name', label: 'Name', type: 'text' },
      { key: 'params', label: 'Parameters', type: 'map', keyLabel: 'Name in reports', valueLabel: 'Parameter in the URL', hint: 'e.g. zone \u2192 zoneid' },
      { key: 'cost_param', label: 'Cost parameter', type: 'text', placeholder: 'cpc', hint: 'A URL parameter carrying each visit\u2019s cost' },
      { key: 'template', label: 'Template', type: 'text', placeholder: 'zeropark', hint: 'A built-in preset (query templates lists them); the keys left empty take its values' },
      { key: 'external_id_param', label: 'Source\u2019s click id parameter', type: 'text', placeholder: 'cid', hint: 'The URL parameter holding the source\u2019s own click id, for its postback' },
      { key: 'postback_url', label: 'Postback URL', type: 'text', wide: true, placeholder: 'https://source.example/pb?cid={external_id}&payout={payout}', hint: 'Tokens: {external_id}, {payout}, {status}, {txid}, {type}, {campaign_id}, {click_id}, {idempotency_key}, \u2026' },
      { key: 'postback_statuses', label: 'Statuses that fire it', type: 'csv', placeholder: 'lead, sale' },
      { key: 'postback_types', label: 'Conversion types that fire it', type: 'csv', placeholder: 'all' },
      { key: 'postback_payout_share', label: 'Payout share', type: 'number', placeholder: '1', hint: 'The share of the payout the source is told, 0 to 1' },
      { key: 'postback_send_share', label: 'Send share', type: 'number', placeholder: '1', hint: 'The share of conversions the source is told about, 0 to 1' },
      { key: 'postback_first_only', label: 'Which conversions of a click', type: 'tristate', options: [['', 'Every conversion (upsells too)'], ['true', 'The first only']] },
    ],
  },
};

const NAV = ['campaigns', 'offers', 'landing_pages', 'affiliate_networks', 'traffic_sources'];

// ---------------------------------------------------------------------------------------
// Dimensions and figures

const DIM_LABELS = {
  campaign: 'Campaign', traffic_source: 'Traffic source', network: 'Network', offer: 'Offer',
  offer_link: 'Offer link', landing_page: 'Landing page', path: 'Path', country: 'Country', os: 'OS', browser: 'Browser',
  device: 'Device', date: 'Date', hour: 'Hour',
};
const DIM_KIND = {
  campaign: 'campaigns', traffic_source: 'traffic_sources', network: 'affiliate_networks',
  offer: 'offers', landing_page: 'landing_pages',
};
const DRILL_ORDER = ['campaign', 'offer', 'offer_link', 'landing_page', 'country', 'device', 'os', 'browser',
  'traffic_source', 'network', 'path'];
const dimLabel = (d) => (Object.hasOwn(DIM_LABELS, d) ? DIM_LABELS[d] : d);

const intFmt = new Intl.NumberFormat('en-US');
const moneyFmt = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const epcFmt = new Intl.NumberFormat('en-US', { minimumFractionDigits: 4, maximumFractionDigits: 4 });
const pctFmt = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

const COLS = [
  { key: 'visits', label: 'Visits', fmt: (v) => intFmt.format(v) },
  { key: 'clicks', label: 'Clicks', fmt: (v) => intFmt.format(v) },
  { key: 'conversions', label: 'Conversions', short: 'Conv.', fmt: (v) => intFmt.format(v) },
  { key: 'revenue', label: 'Revenue', fmt: (v) => moneyFmt.format(v) },
  { key: 'cost', label: 'Cost', fmt: (v) => moneyFmt.format(v) },
  { key: 'profit', label: 'Profit', fmt: (v) => moneyFmt.format(v), signed: true },
  { key: 'roi', label: 'ROI', fmt: (v) => pctFmt.format(v) + '%', signed: true },
  { key: 'cr', label: 'CR', fmt: (v) => pctFmt.format(v) + '%' },
  { key: 'epc', label: 'EPC', fmt: (v) => epcFmt.format(v) },
];

/// Conversions by final status (docs/query.md "Statuses"), shown on request.
const STATUS_COLS = [
  ['leads', 'Leads'], ['sales', 'Sales'], ['pending', 'Pending'], ['rebills', 'Rebills'],
  ['rejected', 'Rejected'], ['chargebacks', 'Chargebacks'],
].map(([key, label]) => ({ key, label, fmt: (v) => intFmt.format(v) }));

function figure(col, v) {
  if (v == null) return h('span', { class: 'muted' }, '\u2014');
  const cls = col.signed ? (v > 0 ? 'pos' : v < 0 ? 'neg' : '') : '';
  return h('span', { class: cls }, col.fmt(v));
}

/// A dimension value as people read it.
function dimText(dim, value, name) {
  if (value == null) return '(none)';
  if (name) return name;
  if (dim === 'path') return 'Path ' + (Number(value) + 1);
  if (dim === 'hour') return String(value).padStart(2, '0') + ':00';
  return value;
}

// ---------------------------------------------------------------------------------------
// Dates (the store's partitions are UTC days)

const isoDay = (d) => d.toISOString().slice(0, 10);
function daysAgo(n) {
  const d = new Date();
  d.setUTCDate(d.getUTCDate() - n);
  return isoDay(d);
}
function presets() {
  const now = new Date();
  const first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const lastMonthEnd = new Date(first.getTime() - 86400000);
  const lastMonthStart = new Date(Date.UTC(lastMonthEnd.getUTCFullYear(), lastMonthEnd.getUTCMonth(), 1));
  return [
    ['today', 'Today', daysAgo(0), daysAgo(0)],
    ['yesterday', 'Yesterday', daysAgo(1), daysAgo(1)],
    ['7d', 'Last 7 days', daysAgo(6), daysAgo(0)],
    ['30d', 'Last 30 days', daysAgo(29), daysAgo(0)],
    ['month', 'This month', isoDay(first), daysAgo(0)],
    ['last_month', 'Last month', isoDay(lastMonthStart), isoDay(lastMonthEnd)],
  ];
}
function daysBetween(from, to) {
  const out = [];
  const d = new Date(from + 'T00:00:00Z');
  const end = new Date(to + 'T00:00:00Z');
  while (d <= end && out.length < 3700) {
    out.push(isoDay(d));
    d.setUTCDate(d.getUTCDate() + 1);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Shell, sign-in, routing

let generation = 0;
const names = new Map(); // "dim\u0000id" → name, learned from report rows

function signIn(message) {
  generation++;
  document.title = 'Sign in · Clicktracker';
  const token = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'The token query serve was started with' });
  const keep = h('input', { type: 'checkbox', id: 'keep' });
  const error = h('p', { class: 'form-error', role: 'alert' }, message || '');
  const button = h('button', { type: 'submit', class: 'primary wide' }, 'Sign in');
  const form = h('form', {
    class: 'signin-card',
    async onsubmit(e) {
      e.preventDefault();
      button.disabled = true;
      error.textContent = '';
      try {
        await api('GET', 'dimensions', undefined, { token: token.value.trim() });
        auth.set(token.value.trim(), keep.checked);
        if (!location.hash || location.hash === '#/signin') location.hash = '#/report';
        route();
      } catch (err) {
        error.textContent = err.status === 401 ? 'That token is not the one this console was started with.' : err.message;
        button.disabled = false;
        token.select();
      }
    },
  },
  h('div', { class: 'brand big' }, logo(), 'Clicktracker'),
  h('h1', {}, 'Sign in to the console'),
  h('label', { for: 'token' }, 'Access token'),
  token,
  h('label', { class: 'check' }, keep, 'Keep me signed in on this device'),
  error,
  button,
  h('p', { class: 'muted small' }, 'The token is the one given to ', h('code', {}, 'query serve --token'), ' or ', h('code', {}, 'QUERY_TOKEN'), '.'));
  clear(document.getElementById('app'), h('main', { class: 'signin' }, form));
  token.focus();
}

function logo() {
  return s('svg', { viewBox: '0 0 32 32', class: 'logo', 'aria-hidden': 'true' },
    s('rect', { width: 32, height: 32, rx: 7, fill: '#4f46e5' }),
    s('path', { d: 'M9 22l5-7 4 4 6-9', fill: 'none', stroke: '#fff', 'stroke-width': 3, 'stroke-linecap': 'round', 'stroke-linejoin': 'round' }));
}

function shell(active) {
  const link = (href, text, key) => h('a', { href, class: key === active ? 'active' : null }, text);
  const view = h('main', { id: 'view', class: 'view' });
  clear(document.getElementById('app'),
    h('header', { class: 'top' },
      h('a', { class: 'brand', href: '#/report' }, logo(), 'Clicktracker'),
      h('nav', { class: 'nav', 'aria-label': 'Sections' },
        link('#/report', 'Reports', 'report'),
        link('#/log', 'Log', 'log'),
        NAV.map((k) => link('#/' + k, KINDS[k].label, k))),
      h('button', {
        class: 'ghost signout',
        onclick() {
          auth.clear();
          history.replaceState(null, '', '#/signin');
          signIn('Signed out.');
        },
      }, 'Sign out')),
    view);
  return view;
}

function route() {
  if (!auth.get()) return signIn();
  const gen = ++generation;
  const hash = location.hash.replace(/^#/, '');
  const q = hash.indexOf('?');
  const path = q < 0 ? hash : hash.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : hash.slice(q + 1));
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = ['?'];
  }
  const section = parts[0] === 'new' ? parts[1] : parts[0] || 'report';
  const isKind = (k) => Object.hasOwn(KINDS, k || '');
  const view = shell(section);
  const done = (p) => p.catch((e) => {
    if (gen === generation && e.status !== 401) clear(view, banner(e.message));
  });
  if (!parts.length || parts[0] === 'report' || parts[0] === 'signin') return done(reportView(view, params, gen));
  if (parts[0] === 'log' && parts.length <= 2) return done(logView(view, parts[1] || 'clicks', params, gen));
  if (parts[0] === 'new' && isKind(parts[1])) return done(editView(view, parts[1], null, gen));
  if (isKind(parts[0]) && parts.length === 1) return done(listView(view, parts[0], params, gen));
  if (isKind(parts[0]) && parts.length === 2) return done(editView(view, parts[0], parts[1], gen));
  clear(view, banner('There is no page at ' + hash + '.'));
}

function banner(text, kind) {
  return h('div', { class: 'banner ' + (kind || 'error'), role: 'alert' }, text);
}

let toastTimer;
function toast(text) {
  let t = document.getElementById('toast');
  if (!t) {
    t = h('div', { id: 'toast', class: 'toast', role: 'status' });
    document.body.append(t);
  }
  t.textContent = text;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 3500);
}

async function copy(text, button) {
  let ok = false;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch { /* fall back below */ }
  }
  if (!ok) {
    const area = h('textarea', { readonly: true, class: 'offscreen' });
    area.value = text;
    document.body.append(area);
    area.select();
    try {
      ok = document.execCommand('copy');
    } catch { ok = false; }
    area.remove();
  }
  const was = button.dataset.label || button.textContent;
  button.dataset.label = was;
  button.textContent = ok ? 'Copied' : 'Select and copy';
  button.classList.toggle('done', ok);
  setTimeout(() => {
    button.textContent = was;
    button.classList.remove('done');
  }, 1600);
}

function copyField(label, text, id) {
  const input = h('input', { type: 'text', readonly: true, value: text, id, class: 'mono', onfocus(e) { e.target.select(); } });
  const button = h('button', { type: 'button', class: 'copy', 'data-copy': id, onclick() { copy(text, button); } }, 'Copy');
  return h('div', { class: 'paste' }, h('label', { for: id }, label), h('div', { class: 'paste-row' }, input, button));
}

// ---------------------------------------------------------------------------------------
// Reports

let dimensionsCache = null;
async function dimensions() {
  if (!dimensionsCache) dimensionsCache = api('GET', 'dimensions').catch((e) => { dimensionsCache = null; throw e; });
  return dimensionsCache;
}

function reportState(p) {
  const today = daysAgo(0);
  const from = /^\d{4}-\d{2}-\d{2}$/.test(p.get('from') || '') ? p.get('from') : today;
  let to = /^\d{4}-\d{2}-\d{2}$/.test(p.get('to') || '') ? p.get('to') : from;
  if (to < from) to = from;
  return {
    from, to,
    by: p.get('by') || 'campaign',
    filters: p.getAll('filter').map((f) => {
      const i = f.indexOf('=');
      return i > 0 ? [f.slice(0, i), f.slice(i + 1)] : null;
    }).filter(Boolean),
    sort: p.get('sort') || '',
    dir: p.get('dir') === 'asc' ? 'asc' : 'desc',
    metric: p.get('metric') || 'visits',
    bots: p.get('bots') === '1',
    drill: p.get('drill') || '',
    statuses: p.get('statuses') === '1',
  };
}

function reportHash(st) {
  const q = new URLSearchParams();
  q.set('from', st.from);
  q.set('to', st.to);
  q.set('by', st.by);
  for (const [d, v] of st.filters) q.append('filter', d + '=' + v);
  if (st.sort) {
    q.set('sort', st.sort);
    q.set('dir', st.dir);
  }
  if (st.metric !== 'visits') q.set('metric', st.metric);
  if (st.bots) q.set('bots', '1');
  if (st.drill) q.set('drill', st.drill);
  if (st.statuses) q.set('statuses', '1');
  return '#/report?' + q.toString();
}

function go(st) {
  location.hash = reportHash(st);
}

function reportQuery(st, by) {
  const q = new URLSearchParams({ by, from: st.from, to: st.to });
  for (const [d, v] of st.filters) q.append('filter', d + '=' + v);
  if (st.bots) q.set('include_bots', 'true');
  return 'report?' + q.toString();
}

function nextDrill(st, all) {
  const used = new Set([st.by, ...st.filters.map(([d]) => d)]);
  if (st.drill && !used.has(st.drill) && all.includes(st.drill)) return st.drill;
  return [...DRILL_ORDER, ...all].find((d) => !used.has(d) && all.includes(d) && d !== 'date' && d !== 'hour') || '';
}

async function reportView(view, p, gen) {
  const st = reportState(p);
  document.title = 'Reports · Clicktracker';
  const timeBy = st.from === st.to ? 'hour' : 'date';
  const [dims, report, timeline] = await Promise.all([
    dimensions(),
    api('GET', reportQuery(st, st.by)),
    api('GET', reportQuery(st, timeBy)),
  ]);
  if (gen !== generation) return;
  for (const r of report.rows) {
    const n = r[st.by + '_name'];
    if (n && r[st.by] != null) names.set(st.by + '\u0000' + r[st.by], n);
  }
  const all = dims.dimensions;
  const drill = nextDrill(st, all);

  clear(view,
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', {}, 'Reports'), crumbs(st)),
      h('div', { class: 'head-actions' },
        h('button', { class: 'ghost', onclick: () => route() }, 'Refresh'))),
    toolbar(st, all),
    kpis(report.totals),
    chartCard(st, timeline, timeBy),
    tableCard(st, report, all, drill));
}

function crumbs(st) {
  const items = [h('a', { href: reportHash({ ...st, by: st.filters.length ? st.filters[0][0] : st.by, filters: [], sort: '' }) }, 'All traffic')];
  st.filters.forEach(([d, v], i) => {
    const name = names.get(d + '\u0000' + v);
    const target = { ...st, filters: st.filters.slice(0, i + 1), by: st.filters[i + 1] ? st.filters[i + 1][0] : st.by, sort: '' };
    items.push(h('span', { class: 'sep', 'aria-hidden': 'true' }, '\u203a'));
    items.push(h('a', { href: reportHash(target) }, dimLabel(d) + ': ' + dimText(d, v, name)));
  });
  items.push(h('span', { class: 'sep', 'aria-hidden': 'true' }, '\u203a'));
  items.push(h('span', { class: 'here' }, 'by ' + dimLabel(st.by).toLowerCase()));
  return h('nav', { class: 'crumbs', 'aria-label': 'Drill-down' }, items);
}

function toolbar(st, all) {
  const list = presets();
  const current = list.find(([, , f, t]) => f === st.from && t === st.to);
  const preset = h('select', {
    id: 'range', 'aria-label': 'Date range',
    onchange(e) {
      const p = list.find(([k]) => k === e.target.value);
      if (p) go({ ...st, from: p[2], to: p[3] });
    },
  }, list.map(([k, label]) => h('option', { value: k }, label)), h('option', { value: 'custom' }, 'Custom range'));
  preset.value = current ? current[0] : 'custom';
  const from = dateInput('from', st.from, (v) => go({ ...st, from: v, to: st.to < v ? v : st.to }));
  const to = dateInput('to', st.to, (v) => go({ ...st, to: v, from: st.from > v ? v : st.from }));
  const byOptions = all.filter((d) => !st.filters.some(([f]) => f === d));
  const by = h('select', {
    id: 'by', 'aria-label': 'Group by',
    onchange(e) { go({ ...st, by: e.target.value, sort: '' }); },
  }, byOptions.map((d) => h('option', { value: d }, dimLabel(d))));
  by.value = st.by;
  const bots = h('input', { type: 'checkbox', id: 'bots', checked: st.bots, onchange(e) { go({ ...st, bots: e.target.checked }); } });
  return h('div', { class: 'toolbar card' },
    h('div', { class: 'field' }, h('label', { for: 'range' }, 'Dates (UTC)'), preset),
    h('div', { class: 'field dates' }, h('label', { for: 'from' }, 'From'), from),
    h('div', { class: 'field dates' }, h('label', { for: 'to' }, 'To'), to),
    h('div', { class: 'field' }, h('label', { for: 'by' }, 'Group by'), by),
    h('label', { class: 'check' }, bots, 'Include bots'));
}

/// A date field that applies its value once the user has stopped typing (a date typed digit by
/// digit is complete, and valid, several times on the way), on Enter, or when it loses focus;
/// a year before 2000 is a date still being typed.
function dateInput(id, value, apply) {
  let timer;
  const input = h('input', { type: 'date', id, value, min: '2000-01-01', 'aria-label': id === 'from' ? 'From' : 'To' });
  const commit = () => {
    clearTimeout(timer);
    const v = input.value;
    if (/^\d{4}-\d{2}-\d{2}$/.test(v) && v >= '2000-01-01' && v !== value) apply(v);
  };
  input.addEventListener('change', () => {
    clearTimeout(timer);
    timer = setTimeout(commit, 900);
  });
  input.addEventListener('blur', commit);
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter') commit(); });
  return input;
}

function kpis(t) {
  const pick = ['visits', 'clicks', 'conversions', 'revenue', 'cost', 'profit', 'roi', 'cr', 'epc'];
  return h('section', { class: 'kpis', 'aria-label': 'Totals' },
    pick.map((k) => {
      const col = COLS.find((c) => c.key === k);
      const short = k === 'roi' && t[k] != null && Math.abs(t[k]) >= 100 ? { ...col, fmt: (v) => intFmt.format(Math.round(v)) + '%' } : col;
      return h('div', { class: 'kpi card', 'data-kpi': k }, h('div', { class: 'kpi-label' }, col.label), h('div', { class: 'kpi-value', title: col.fmt(t[k] ?? 0) }, figure(short, t[k])));
    }));
}

const CHART_METRICS = ['visits', 'clicks', 'conversions', 'revenue', 'profit'];

function chartCard(st, timeline, timeBy) {
  const metric = CHART_METRICS.includes(st.metric) ? st.metric : 'visits';
  const col = COLS.find((c) => c.key === metric);
  const byKey = new Map(timeline.rows.filter((r) => !r.unknown_click).map((r) => [timeBy === 'hour' ? String(Number(r.hour)) : r.date, r]));
  const points = timeBy === 'hour'
    ? Array.from({ length: 24 }, (_, i) => ({ label: String(i).padStart(2, '0') + ':00', value: (byKey.get(String(i)) || {})[metric] || 0 }))
    : daysBetween(st.from, st.to).map((d) => ({ label: d.slice(5), full: d, value: (byKey.get(d) || {})[metric] || 0 }));
  const tabs = h('div', { class: 'tabs', role: 'tablist' }, CHART_METRICS.map((m) =>
    h('button', { role: 'tab', class: m === metric ? 'tab active' : 'tab', 'aria-selected': m === metric ? 'true' : 'false', onclick() { go({ ...st, metric: m }); } }, COLS.find((c) => c.key === m).label)));
  const plot = h('div', { class: 'chart', id: 'chart' });
  const draw = () => drawChart(plot, points, col);
  requestAnimationFrame(draw);
  window.onresize = () => {
    clearTimeout(window.chartTimer);
    window.chartTimer = setTimeout(draw, 120);
  };
  return h('section', { class: 'card chart-card' },
    h('div', { class: 'card-head' }, h('h2', {}, col.label + (timeBy === 'hour' ? ' by hour' : ' by day')), tabs),
    plot);
}

function niceStep(span) {
  const raw = span / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
}

function drawChart(el, points, col) {
  if (!el.isConnected) return;
  const W = Math.max(el.clientWidth, 260);
  const H = el.clientWidth < 500 ? 180 : 240;
  const L = 56, R = 16, T = 12, B = 26;
  const values = points.map((p) => p.value);
  let lo = Math.min(0, ...values);
  let hi = Math.max(0, ...values);
  if (hi === lo) hi = lo + 1;
  const step = niceStep(hi - lo);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const x = (i) => L + (W - L - R) * (points.length === 1 ? 0.5 : i / (points.length - 1));
  const y = (v) => T + (H - T - B) * (hi - v) / (hi - lo);
  const svg = s('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': col.label + ' over time' });
  for (let v = lo; v <= hi + step / 2; v += step) {
    svg.append(s('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v === 0 ? 'axis' : 'grid' }));
    svg.append(s('text', { x: L - 8, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, col.fmt(Math.round(v * 100) / 100).replace(/\.00%?$/, '')));
  }
  const every = Math.max(1, Math.ceil(points.length / Math.max(2, Math.floor((W - L - R) / 64))));
  points.forEach((p, i) => {
    if (i % every === 0 || i === points.length - 1 && points.length < 8) {
      const anchor = points.length > 1 && i === 0 ? 'start' : points.length > 1 && i === points.length - 1 ? 'end' : 'middle';
      svg.append(s('text', { x: x(i), y: H - 6, 'text-anchor': anchor, class: 'tick' }, p.label));
    }
  });
  const line = points.map((p, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(p.value).toFixed(1)}`).join('');
  if (points.length > 1) {
    svg.append(s('path', { d: `${line}L${x(points.length - 1).toFixed(1)},${y(0)}L${x(0).toFixed(1)},${y(0)}Z`, class: 'area' }));
    svg.append(s('path', { d: line, class: 'line' }));
  }
  if (points.length <= 120) points.forEach((p, i) => {
    svg.append(s('circle', { cx: x(i), cy: y(p.value), r: points.length > 60 ? 2 : 3.5, class: 'dot' },
      s('title', {}, `${p.full || p.label}: ${col.fmt(p.value)}`)));
  });
  clear(el, svg);
}

function sortRows(rows, st) {
  if (!st.sort) return rows;
  const sign = st.dir === 'asc' ? 1 : -1;
  const key = (r) => (st.sort === '_dim' ? dimText(st.by, r[st.by], r[st.by + '_name']) : r[st.sort]);
  return [...rows].sort((a, b) => {
    if (a.unknown_click !== b.unknown_click) return a.unknown_click ? 1 : -1;
    const x = key(a);
    const y = key(b);
    if (x == null && y == null) return 0;
    if (x == null) return 1;
    if (y == null) return -1;
    return (typeof x === 'number' ? x - y : String(x).localeCompare(String(y), 'en', { numeric: true })) * sign;
  });
}

function tableCard(st, report, all, drill) {
  const header = (key, label, numeric) => {
    const active = st.sort === key;
    const dir = active && st.dir === 'desc' ? 'asc' : active ? 'desc' : numeric ? 'desc' : 'asc';
    return h('th', { class: numeric ? 'num' : 'dim', 'aria-sort': active ? (st.dir === 'asc' ? 'ascending' : 'descending') : null },
      h('button', { class: 'sort' + (active ? ' ' + st.dir : ''), onclick() { go({ ...st, sort: key, dir }); } }, label));
  };
  const drillSelect = h('select', {
    id: 'drill', 'aria-label': 'Drill down by',
    onchange(e) { go({ ...st, drill: e.target.value }); },
  }, all.filter((d) => d !== st.by && !st.filters.some(([f]) => f === d)).map((d) => h('option', { value: d }, dimLabel(d))));
  drillSelect.value = drill;
  const rows = sortRows(report.rows, st);
  const cols = st.statuses ? [...COLS, ...STATUS_COLS] : COLS;
  const body = rows.map((r) => {
    const value = r[st.by];
    const name = r[st.by + '_name'];
    const canDrill = !r.unknown_click && value != null && drill;
    const target = canDrill ? reportHash({ ...st, filters: [...st.filters, [st.by, value]], by: drill, sort: '', drill: '' }) : null;
    const label = r.unknown_click ? 'Conversions of unknown clicks' : dimText(st.by, value, name);
    const cell = h('td', { class: 'dim' },
      canDrill ? h('a', { href: target, class: 'drill', title: 'Drill down by ' + dimLabel(drill).toLowerCase() }, label) : h('span', { class: value == null ? 'muted' : '' }, label),
      value != null && !r.unknown_click && (name || DIM_KIND[st.by])
        ? h('div', { class: 'sub' },
          name ? h('span', { class: 'id' }, value) : null,
          DIM_KIND[st.by] ? h('a', { class: 'edit-link', href: `#/${DIM_KIND[st.by]}/${enc(value)}` }, 'Edit') : null)
        : null);
    return h('tr', { class: r.unknown_click ? 'unknown' : null, 'data-value': value == null ? '' : value }, cell, cols.map((c) => h('td', { class: 'num' }, figure(c, r[c.key]))));
  });
  const empty = rows.length === 0
    ? h('tr', {}, h('td', { colspan: cols.length + 1, class: 'empty' }, 'No traffic in these dates. Paste a campaign\u2019s URL into a traffic source, or change the dates.'))
    : null;
  const foot = h('tr', {}, h('td', { class: 'dim' }, 'Total'), cols.map((c) => h('td', { class: 'num' }, figure(c, report.totals[c.key]))));
  return h('section', { class: 'card table-card' },
    h('div', { class: 'card-head' },
      h('h2', {}, 'By ' + dimLabel(st.by).toLowerCase(), h('span', { class: 'count' }, intFmt.format(report.rows.length))),
      h('div', { class: 'card-tools' },
        h('label', { class: 'check' },
          h('input', { type: 'checkbox', id: 'statuses', checked: st.statuses, onchange(e) { go({ ...st, statuses: e.target.checked }); } }),
          'Statuses'),
        drill ? h('div', { class: 'field inline' }, h('label', { for: 'drill' }, 'Drill down by'), drillSelect) : null)),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'report', id: 'report' },
        h('thead', {}, h('tr', {}, header('_dim', dimLabel(st.by), false), cols.map((c) => header(c.key, c.short || c.label, true)))),
        h('tbody', {}, body, empty),
        h('tfoot', {}, foot))));
}

// ---------------------------------------------------------------------------------------
// Catalog lists

const PAGE = 50;

async function listView(view, kind, p, gen) {
  const K = KINDS[kind];
  document.title = K.label + ' · Clicktracker';
  const after = p.get('after') || '';
  const page = await api('GET', `${kind}?limit=${PAGE}` + (after ? '&after=' + enc(after) : ''));
  const lookups = await listLookups(kind, page.items);
  if (gen !== generation) return;
  const cols = LIST_COLS[kind];
  const rows = page.items.map((o) => h('tr', { 'data-id': o.id },
    h('td', { class: 'dim' }, h('a', { href: `#/${kind}/${enc(o.id)}`, class: 'strong' }, o.name || o.id), o.name ? h('span', { class: 'id' }, o.id) : null),
    cols.map(([, cell]) => h('td', {}, cell(o, lookups)))));
  clear(view,
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', {}, K.label, h('span', { class: 'count' }, intFmt.format(page.total))), h('p', { class: 'muted' }, K.blurb)),
      h('div', { class: 'head-actions' }, h('a', { class: 'button primary', href: '#/new/' + kind }, 'New ' + K.one))),
    h('section', { class: 'card' },
      h('div', { class: 'table-wrap' },
        h('table', { class: 'list' },
          h('thead', {}, h('tr', {}, h('th', { class: 'dim' }, 'Name'), cols.map(([label]) => h('th', {}, label)))),
          h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: cols.length + 1, class: 'empty' }, after ? 'No more.' : `No ${K.label.toLowerCase()} yet.`))))),
      h('div', { class: 'pager' },
        after ? h('a', { class: 'button ghost', href: '#/' + kind }, 'First page') : null,
        page.next ? h('a', { class: 'button ghost', href: `#/${kind}?after=${enc(page.next)}` }, 'Next page') : null)));
}

/// Names of what a page of objects refers to.
async function listLookups(kind, items) {
  const want = kind === 'campaigns' ? 'traffic_sources' : kind === 'offers' ? 'affiliate_networks' : null;
  if (!want || !items.length) return new Map();
  const page = await api('GET', `${want}?limit=1000`);
  return new Map(page.items.map((o) => [o.id, o.name || o.id]));
}

const LIST_COLS = {
  campaigns: [
    ['Traffic source', (o, l) => l.get(o.traffic_source) || o.traffic_source],
    ['Campaign URL', (o) => urlCell(o.campaign_url)],
    ['', (o) => h('a', { href: reportHash({ ...reportState(new URLSearchParams()), by: 'offer', filters: [['campaign', o.id]] }) }, 'Report')],
  ],
  offers: [
    ['Network', (o, l) => (o.network ? l.get(o.network) || o.network : h('span', { class: 'muted' }, '\u2014'))],
    ['Payout', (o) => moneyFmt.format(o.payout || 0)],
    ['URL', (o) => h('span', { class: 'mono clip' }, o.url || (o.links || []).map((l) => l.url).join(' \u00b7 '))],
  ],
  landing_pages: [['URL', (o) => h('span', { class: 'mono clip' }, o.url)]],
  affiliate_networks: [
    ['Postback URL', (o) => urlCell(o.postback_url)],
    ['Token', (o) => (o.postback_token ? 'Required' : h('span', { class: 'muted' }, 'None'))],
  ],
  traffic_sources: [
    ['Parameters', (o) => Object.entries(o.params || {}).map(([k, v]) => `${k} \u2190 ${v}`).join(', ') || h('span', { class: 'muted' }, '\u2014')],
    ['Cost parameter', (o) => o.cost_param || h('span', { class: 'muted' }, '\u2014')],
  ],
};

function urlCell(url) {
  const button = h('button', { type: 'button', class: 'copy small', onclick() { copy(url, button); } }, 'Copy');
  return h('div', { class: 'url-cell' }, h('span', { class: 'mono clip', title: url }, url), button);
}

// ---------------------------------------------------------------------------------------
// Forms

/// What a form's ref fields offer: the first 1 000 objects of each kind a form refers to.
async function refOptions(kind) {
  const want = new Set();
  const walk = (spec) => spec.fields.forEach((f) => {
    if (f.type === 'ref') want.add(f.kind);
    if (f.item) walk(f.item);
  });
  walk(KINDS[kind]);
  const out = {};
  await Promise.all([...want].map(async (k) => {
    const page = await api('GET', `${k}?limit=1000`);
    out[k] = { items: page.items.map((o) => [o.id, o.name]), more: page.total > page.items.length };
  }));
  return out;
}

let fieldSeq = 0;

/// One field: its element, and `get(path, seen)` giving its value (undefined to leave the
/// key out) and recording which element stands for which path, for the API's messages.
function field(spec, value, refs) {
  const id = 'f' + ++fieldSeq;
  const wrap = (control, extra) => h('div', { class: 'field' + (spec.wide ? ' wide' : ''), 'data-key': spec.key },
    h('label', { for: id }, spec.label, spec.required ? h('span', { class: 'req', title: 'Required' }, ' *') : null), control, extra,
    spec.hint ? h('p', { class: 'hint' }, spec.hint) : null);
  switch (spec.type) {
    case 'text':
    case 'secret': {
      const input = h('input', { type: 'text', id, value: value ?? '', placeholder: spec.placeholder, autocomplete: 'off', spellcheck: 'false', class: spec.type === 'secret' ? 'mono' : null });
      const gen = spec.type === 'secret' ? h('button', {
        type: 'button', class: 'ghost small',
        onclick() {
          const b = new Uint8Array(16);
          crypto.getRandomValues(b);
          input.value = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
        },
      }, 'Generate') : null;
      return {
        el: wrap(gen ? h('div', { class: 'paste-row' }, input, gen) : input),
        get(path, seen) {
          seen.set(path, input);
          const v = input.value.trim();
          return v === '' ? undefined : v;
        },
      };
    }
    case 'number':
    case 'int': {
      const input = h('input', { type: 'number', id, value: value ?? '', placeholder: spec.placeholder, step: spec.type === 'int' ? '1' : 'any', min: spec.min ?? '0', inputmode: spec.type === 'int' ? 'numeric' : 'decimal' });
      return {
        el: wrap(input),
        get(path, seen) {
          seen.set(path, input);
          // The browser empties a number field it cannot read ("1.5e"): that is not "unset".
          if (input.validity.badInput) {
            seen.errors.push([path, `${spec.label}: not a number`]);
            return undefined;
          }
          const raw = input.value.trim();
          if (raw === '') return undefined;
          const n = Number(raw);
          if (spec.type === 'int' && !Number.isInteger(n)) seen.errors.push([path, `${spec.label}: a whole number`]);
          return n;
        },
      };
    }
    case 'ref': {
      const options = refs[spec.kind] || { items: [], more: false };
      let input;
      if (options.more) {
        const list = h('datalist', { id: id + '-list' }, options.items.map(([v, n]) => h('option', { value: v }, n || v)));
        input = h('input', { type: 'text', id, value: value ?? '', list: id + '-list', placeholder: 'Id', autocomplete: 'off' });
        return {
          el: wrap(input, list),
          get(path, seen) {
            seen.set(path, input);
            return input.value.trim() || undefined;
          },
        };
      }
      input = h('select', { id },
        h('option', { value: '' }, spec.none || 'Choose\u2026'),
        options.items.map(([v, n]) => h('option', { value: v }, n ? `${n} (${v})` : v)),
        value && !options.items.some(([v]) => v === value) ? h('option', { value }, value + ' (missing)') : null);
      input.value = value ?? '';
      return {
        el: wrap(input),
        get(path, seen) {
          seen.set(path, input);
          return input.value || undefined;
        },
      };
    }
    case 'select':
    case 'tristate': {
      const input = h('select', { id }, spec.options.map(([v, label]) => h('option', { value: v }, label)));
      input.value = value == null ? '' : String(value);
      return {
        el: wrap(input),
        get(path, seen) {
          seen.set(path, input);
          if (input.value === '') return undefined;
          return spec.type === 'tristate' ? input.value === 'true' : input.value;
        },
      };
    }
    case 'csv': {
      const input = h('input', { type: 'text', id, value: (value || []).join(', '), placeholder: spec.placeholder, autocomplete: 'off' });
      return {
        el: wrap(input),
        get(path, seen) {
          seen.set(path, input);
          const v = input.value.split(',').map((x) => x.trim()).filter(Boolean);
          return v.length ? v : undefined;
        },
      };
    }
    case 'map': return mapField(spec, value || {}, id, wrap);
    case 'list': return listField(spec, value || [], refs, id);
    default: throw new Error('unknown field type ' + spec.type);
  }
}

function mapField(spec, value, id, wrap) {
  const rows = h('div', { class: 'map-rows' });
  const entries = [];
  const addRow = (k, v) => {
    const key = h('input', { type: 'text', value: k, placeholder: spec.keyLabel, 'aria-label': spec.keyLabel, autocomplete: 'off' });
    const val = h('input', { type: 'text', value: v, placeholder: spec.valueLabel, 'aria-label': spec.valueLabel, autocomplete: 'off' });
    const entry = { key, val };
    const row = h('div', { class: 'map-row' }, key, h('span', { class: 'arrow' }, '\u2190'), val,
      h('button', { type: 'button', class: 'ghost small', 'aria-label': 'Remove', onclick() { entries.splice(entries.indexOf(entry), 1); row.remove(); } }, 'Remove'));
    entries.push(entry);
    rows.append(row);
    return key;
  };
  Object.entries(value).forEach(([k, v]) => addRow(k, v));
  const add = h('button', { type: 'button', class: 'ghost small', id, onclick() { addRow('', '').focus(); } }, 'Add parameter');
  return {
    el: wrap(rows, add),
    get(path, seen) {
      seen.set(path, rows);
      const out = {};
      for (const { key, val } of entries) {
        const k = key.value.trim();
        if (!k && !val.value.trim()) continue;
        out[k] = val.value.trim();
        seen.set(`${path}.${k}`, key);
      }
      return Object.keys(out).length ? out : undefined;
    },
  };
}

function listField(spec, value, refs, id) {
  const box = h('div', { class: 'list-items' + (spec.compact ? ' compact' : '') });
  const items = [];
  const renumber = () => items.forEach((it, i) => { it.title.textContent = `${spec.itemLabel} ${i + 1}`; });
  const addItem = (v) => {
    const form = fieldsOf(spec.item, v, refs);
    const title = h('span', { class: 'item-title' });
    const item = { form, title };
    const el = h('fieldset', { class: 'item' },
      h('legend', {}, title,
        h('button', { type: 'button', class: 'link remove', onclick() { items.splice(items.indexOf(item), 1); el.remove(); renumber(); } }, 'Remove')),
      h('div', { class: 'item-fields' }, form.el));
    item.el = el;
    items.push(item);
    box.append(el);
    renumber();
    return el;
  };
  value.forEach(addItem);
  const add = h('button', { type: 'button', class: 'ghost small add', id, onclick() { const el = addItem(spec.fresh ? spec.fresh() : {}); const f = el.querySelector('input,select'); if (f) f.focus(); } }, '+ ' + spec.add);
  return {
    el: h('div', { class: 'field wide list-field', 'data-key': spec.key },
      h('div', { class: 'list-head' }, h('span', { class: 'label' }, spec.label), spec.hint ? h('span', { class: 'hint' }, spec.hint) : null),
      box, add),
    get(path, seen) {
      seen.set(path, box);
      const out = items.map((it, i) => {
        seen.set(`${path}[${i}]`, it.el);
        return it.form.get(`${path}[${i}]`, seen);
      });
      return out.length ? out : undefined;
    },
  };
}

function fieldsOf(spec, value, refs) {
  const parts = spec.fields.map((f) => ({ f, x: field(f, (value || {})[f.key], refs) }));
  return {
    el: parts.map((p) => p.x.el),
    get(path, seen) {
      const out = {};
      for (const { f, x } of parts) {
        const v = x.get(path ? `${path}.${f.key}` : f.key, seen);
        if (v !== undefined) out[f.key] = v;
      }
      return out;
    },
  };
}

/// The element the API's `field` (`campaigns/c1.paths[0].offers[0].offer`) names, or the
/// nearest one above it.
function fieldElement(field, kind, id, seen) {
  let path = field || '';
  const prefix = `${kind}/${id}.`;
  if (path.startsWith(prefix)) path = path.slice(prefix.length);
  if (path === 'id' && seen.has('id')) return seen.get('id');
  while (path) {
    if (seen.has(path)) return seen.get(path);
    const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
    if (cut <= 0) break;
    path = path.slice(0, cut);
  }
  return seen.get(path) || null;
}

const slug = (text) => text.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 48);

async function editView(view, kind, id, gen) {
  const K = KINDS[kind];
  const isNew = id == null;
  document.title = (isNew ? 'New ' + K.one : id) + ' · Clicktracker';
  const [got, refs] = await Promise.all([
    isNew ? Promise.resolve({ json: {}, etag: null }) : api('GET', `${kind}/${enc(id)}`, undefined, { full: true }),
    refOptions(kind),
  ]);
  const obj = got.json;
  // Create only what does not exist yet; change only the version shown here.
  const precondition = isNew ? { 'If-None-Match': '*' } : got.etag ? { 'If-Match': got.etag } : {};
  if (gen !== generation) return;
  if (isNew && kind === 'campaigns') obj.paths = [{ offers: [{}] }];
  const form = fieldsOf(K, obj, refs);
  const idInput = h('input', { type: 'text', id: 'object-id', value: id ?? '', readonly: !isNew, required: true, placeholder: 'spring-push-us', autocomplete: 'off', spellcheck: 'false', class: 'mono' });
  let idTouched = !isNew;
  idInput.addEventListener('input', () => { idTouched = true; });
  const nameInput = form.el[0].querySelector('input');
  if (isNew && nameInput) nameInput.addEventListener('input', () => { if (!idTouched) idInput.value = slug(nameInput.value); });
  const error = h('div', { class: 'banner error hidden', role: 'alert', id: 'form-error' });
  const save = h('button', { type: 'submit', class: 'primary', id: 'save' }, isNew ? 'Create ' + K.one : 'Save changes');

  const submit = async (e) => {
    e.preventDefault();
    for (const bad of view.querySelectorAll('.invalid')) bad.classList.remove('invalid');
    for (const m of view.querySelectorAll('.field-error')) m.remove();
    error.classList.add('hidden');
    const seen = new Map([['id', idInput]]);
    seen.errors = [];
    const body = { ...obj };
    for (const f of K.fields) delete body[f.key];
    // What the API adds to an object for pasting elsewhere (a traffic source's own
    // postback_url is a field).
    if (kind === 'campaigns') delete body.campaign_url;
    if (kind === 'affiliate_networks') delete body.postback_url;
    Object.assign(body, form.get('', seen));
    if (seen.errors.length) {
      const [path, message] = seen.errors[0];
      return showError({ message, field: path }, seen);
    }
    const newId = idInput.value.trim();
    if (!newId) return showError({ message: 'Give it an id: letters, digits, dashes.', field: 'id' }, seen);
    body.id = newId;
    save.disabled = true;
    try {
      await api('PUT', `${kind}/${enc(newId)}`, body, { headers: precondition });
      toast(isNew ? `Created ${K.one} ${newId}: live on the edges within seconds.` : `Saved: live on the edges within seconds.`);
      const target = `#/${kind}/${enc(newId)}`;
      if (location.hash === target) route();
      else location.hash = target;
    } catch (err) {
      save.disabled = false;
      if (err.status !== 401) showError(err, seen);
    }
  };
  const showError = (err, seen) => {
    clear(error, err.message);
    error.classList.remove('hidden');
    const el = err.field ? fieldElement(err.field, kind, idInput.value.trim(), seen) : null;
    if (el) {
      el.classList.add('invalid');
      el.after(h('p', { class: 'field-error' }, err.message));
      el.scrollIntoView({ block: 'center', behavior: 'smooth' });
      if (el.focus) el.focus({ preventScroll: true });
    } else {
      error.scrollIntoView({ block: 'center', behavior: 'smooth' });
    }
  };
  const remove = isNew ? null : h('button', {
    type: 'button', class: 'danger', id: 'delete',
    async onclick() {
      if (!confirm(`Delete ${K.one} ${id}? Edges stop answering for it within seconds.`)) return;
      try {
        await api('DELETE', `${kind}/${enc(id)}`, undefined, { headers: precondition });
        toast(`Deleted ${K.one} ${id}.`);
        location.hash = '#/' + kind;
      } catch (err) {
        if (err.status !== 401) showError(err, new Map());
      }
    },
  }, 'Delete');

  const paste = [];
  if (obj.campaign_url) paste.push(copyField('Campaign URL \u2014 paste into the traffic source', obj.campaign_url, 'campaign-url'));
  if (obj.postback_url && kind === 'affiliate_networks') paste.push(copyField('Postback URL \u2014 paste into the affiliate network', obj.postback_url, 'postback-url'));

  clear(view,
    h('div', { class: 'page-head' },
      h('div', {},
        h('nav', { class: 'crumbs' }, h('a', { href: '#/' + kind }, K.label), h('span', { class: 'sep' }, '\u203a'), h('span', { class: 'here' }, isNew ? 'New' : id)),
        h('h1', {}, isNew ? 'New ' + K.one : obj.name || id)),
      h('div', { class: 'head-actions' },
        !isNew && K.dim ? h('a', { class: 'button ghost', href: reportHash({ ...reportState(new URLSearchParams()), by: K.dim === 'campaign' ? 'offer' : 'campaign', filters: [[K.dim, id]] }) }, 'Report') : null)),
    paste.length ? h('section', { class: 'card paste-card' }, paste) : null,
    h('form', { class: 'card object-form', novalidate: true, onsubmit: submit },
      error,
      h('div', { class: 'field' }, h('label', { for: 'object-id' }, 'Id', h('span', { class: 'req' }, ' *')), idInput,
        h('p', { class: 'hint' }, isNew ? 'Used in URLs and reports; cannot be changed later.' : 'Ids cannot be changed.')),
      form.el,
      h('div', { class: 'form-actions' }, save, h('a', { class: 'button ghost', href: '#/' + kind }, 'Cancel'), h('span', { class: 'spacer' }), remove)));
}

// ---------------------------------------------------------------------------------------

window.addEventListener('hashchange', route);
window.addEventListener('storage', (e) => { if (e.key === TOKEN_KEY && !auth.get()) signIn(); });
route();
