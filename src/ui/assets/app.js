// baton ui: live updates (server-sent events from /events, then the page re-read and its
// live regions swapped in), long texts loaded on demand, and confirmations. No framework.
(() => {
  'use strict';
  const body = document.body;
  const page = body.dataset.page || location.pathname + location.search;
  const indicator = document.getElementById('live-status');
  // A page answering a form POST shows the same view as its own address.
  if (location.pathname + location.search !== page) history.replaceState(null, '', page);

  let shown = body.dataset.counter;
  let busy = false;
  let again = false;

  // Re-read the page and swap in every region marked data-live, keeping what the reader
  // opened or loaded, and leaving alone a region whose form field they are typing in.
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const response = await fetch(page, { headers: { 'X-Baton-Live': '1' }, credentials: 'same-origin' });
        if (!response.ok) break;
        const fresh = new DOMParser().parseFromString(await response.text(), 'text/html');
        swap(fresh);
        shown = fresh.body.dataset.counter;
        body.dataset.counter = shown;
        document.dispatchEvent(new CustomEvent('baton:refreshed', { detail: shown }));
      } while (again);
    } catch (err) {
      // The next change tries again.
    } finally {
      busy = false;
    }
  }

  function swap(fresh) {
    const focused = document.activeElement;
    for (const region of fresh.querySelectorAll('[data-live][id]')) {
      const old = document.getElementById(region.id);
      if (!old) continue;
      if (focused && old.contains(focused) && focused.matches('input, textarea, select')) continue;
      for (const d of old.querySelectorAll('details[id][open]')) {
        const twin = region.querySelector('#' + CSS.escape(d.id));
        if (twin) twin.open = true;
      }
      for (const pre of old.querySelectorAll('pre[data-whole][id]')) {
        const twin = region.querySelector('#' + CSS.escape(pre.id));
        if (twin) { twin.textContent = pre.textContent; twin.dataset.whole = '1'; }
      }
      old.replaceWith(document.importNode(region, true));
    }
  }

  const source = new EventSource('/events');
  source.addEventListener('change', (e) => {
    if (indicator) indicator.className = 'live on';
    if (e.data !== shown) refresh();
  });
  source.addEventListener('error', () => { if (indicator) indicator.className = 'live off'; });

  // "Load all N bytes": read an event's long text through its 16 KB windows.
  document.addEventListener('click', async (e) => {
    const button = e.target.closest('button.load');
    if (!button) return;
    const target = document.getElementById(button.dataset.target);
    button.disabled = true;
    let text = '';
    let offset = 0;
    try {
      while (offset !== null && text.length < 8 * 1024 * 1024) {
        const url = `/runs/${encodeURIComponent(button.dataset.run)}/events/${button.dataset.seq}?offset=${offset}`;
        const response = await fetch(url, { credentials: 'same-origin' });
        const data = await response.json();
        if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
        text += data.text;
        offset = data.next_offset ?? null;
      }
      if (target) { target.textContent = text; target.dataset.whole = '1'; }
      button.remove();
    } catch (err) {
      button.disabled = false;
      button.textContent = 'Could not load: ' + err.message;
    }
  });

  // "Full size": the graph 1:1 inside its box instead of scaled to fit. The choice
  // outlives the live refreshes that replace the picture.
  let fullSize = false;
  function showSize() {
    const picture = document.querySelector('#graph .picture');
    const button = document.querySelector('#graph button.zoom');
    if (picture) picture.classList.toggle('full', fullSize);
    if (button) { button.textContent = fullSize ? 'Fit to box' : 'Full size'; button.setAttribute('aria-pressed', String(fullSize)); }
  }
  document.addEventListener('click', (e) => {
    if (!e.target.closest('#graph button.zoom')) return;
    fullSize = !fullSize;
    showSize();
  });
  document.addEventListener('baton:refreshed', showSize);

  document.addEventListener('submit', (e) => {
    const question = e.target.dataset.confirm;
    if (question && !window.confirm(question)) e.preventDefault();
  });
})();
