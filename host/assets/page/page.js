// Vitrine search page: plain ES2020, no dependencies, no inline code (strict CSP).
'use strict';

(() => {
  const PAGE_SIZE = 24;
  const MAX_OFFSET = 1000;
  const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
  const STORE_KEY = 'vitrine.key';
  const STORE_TENANT = 'vitrine.tenant';
  const IMAGE_NAME = /\.(jpe?g|png|webp|gif)$/i;

  const $ = (id) => document.getElementById(id);
  const els = {
    settingsForm: $('settings-form'),
    key: $('key'),
    tenant: $('tenant'),
    forgetKey: $('forget-key'),
    form: $('search-form'),
    q: $('q'),
    submit: $('search-submit'),
    imageInput: $('image-input'),
    dropZone: $('drop-zone'),
    preview: $('image-preview'),
    previewImg: $('preview-img'),
    previewName: $('preview-name'),
    clearImage: $('clear-image'),
    category: $('filter-category'),
    categories: $('categories'),
    priceMin: $('filter-price-min'),
    priceMax: $('filter-price-max'),
    inStock: $('filter-in-stock'),
    mode: $('mode'),
    apply: $('apply-filters'),
    facets: $('facets'),
    facetCategory: $('facet-category'),
    facetPrice: $('facet-price'),
    facetStock: $('facet-stock'),
    summary: $('query-summary'),
    latency: $('latency'),
    plugins: $('plugins'),
    status: $('status'),
    error: $('error'),
    results: $('results'),
    prev: $('prev-page'),
    next: $('next-page'),
    pageNumber: $('page-number'),
  };

  const state = {
    // {type: 'text', text} | {type: 'image', file} | {type: 'like', id, title}; plus optional filters.
    query: null,
    offset: 0,
    controller: null, // the search request in flight
    imagesController: null, // product image downloads of the results shown
    resultUrls: [], // object URLs of the results shown
    previewUrl: null,
    qDirty: false, // the text box was edited since the last query started
    categories: new Set(),
  };

  // ---------- storage (this tab only) ----------

  function storageGet(name) {
    try {
      return sessionStorage.getItem(name);
    } catch {
      return null;
    }
  }

  function storageSet(name, value) {
    try {
      if (value) sessionStorage.setItem(name, value);
      else sessionStorage.removeItem(name);
    } catch {
      // Storage can be unavailable (privacy modes); the page still works for this visit.
    }
  }

  function restoreSettings() {
    const key = storageGet(STORE_KEY);
    if (key) els.key.value = key;
    const fromUrl = new URLSearchParams(window.location.search).get('tenant');
    const tenant = (fromUrl && fromUrl.trim()) || storageGet(STORE_TENANT);
    if (tenant) els.tenant.value = tenant;
    storageSet(STORE_TENANT, els.tenant.value.trim());
  }

  // ---------- small helpers ----------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setStatus(text) {
    els.status.textContent = text;
  }

  function showError(code, message) {
    els.error.textContent = message;
    els.error.dataset.code = code;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.textContent = '';
    delete els.error.dataset.code;
  }

  function isImageFile(file) {
    if (!file) return false;
    return file.type ? file.type.startsWith('image/') : IMAGE_NAME.test(file.name || '');
  }

  function firstImage(files) {
    return Array.from(files || []).find(isImageFile) || null;
  }

  function isTextEntry(node) {
    if (!node || node === document.body) return false;
    if (node.isContentEditable || node.tagName === 'TEXTAREA') return true;
    if (node.tagName !== 'INPUT') return false;
    return !['checkbox', 'radio', 'button', 'submit', 'reset', 'file', 'range', 'color'].includes(node.type);
  }

  function retryAfterSeconds(header) {
    if (!header) return null;
    const trimmed = header.trim();
    if (/^\d+$/.test(trimmed)) return Number(trimmed);
    const date = Date.parse(trimmed);
    return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
  }

  function formatMs(value) {
    const n = Number(value);
    if (!Number.isFinite(n)) return '?';
    return n >= 100 ? String(Math.round(n)) : String(Math.round(n * 10) / 10);
  }

  function describeQuery(query) {
    if (query.type === 'text') return `Results for "${query.text}"`;
    if (query.type === 'image') return 'Results for your image';
    return `Products like "${query.title}"`;
  }

  // ---------- building the query ----------

  // Returns the query with the filters currently entered, or null (after showing why) if one is invalid.
  function withFilters(base) {
    const filters = {};
    const category = els.category.value.trim();
    if (category) filters.category = category;
    const prices = [
      [els.priceMin, 'price_min', 'Price min'],
      [els.priceMax, 'price_max', 'Price max'],
    ];
    for (const [input, name, label] of prices) {
      const raw = input.value.trim();
      if (input.validity.badInput || (raw !== '' && !(Number(raw) >= 0))) {
        showError('invalid_filter', `${label} must be a number of 0 or more.`);
        input.focus();
        return null;
      }
      if (raw !== '') filters[name] = Number(raw);
    }
    if ('price_min' in filters && 'price_max' in filters && filters.price_min > filters.price_max) {
      showError('invalid_filter', 'Price min is above price max.');
      els.priceMin.focus();
      return null;
    }
    if (els.inStock.checked) filters.in_stock = true;
    const { filters: _previous, ...rest } = base;
    rest.mode = els.mode.value;
    return Object.keys(filters).length ? { ...rest, filters } : rest;
  }

  function buildRequest(query, offset, key, tenant) {
    const url = `/v1/tenants/${encodeURIComponent(tenant)}/search`;
    const options = { limit: PAGE_SIZE, offset };
    // Facets do not change from page to page: asked for on the first only.
    if (offset === 0) options.facets = ['category', 'price', 'in_stock'];
    if (query.filters) options.filters = query.filters;
    // Keyword matching needs words: other queries keep the server's default (hybrid).
    if (query.mode && (query.mode !== 'keyword' || query.type === 'text')) options.mode = query.mode;
    const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
    if (query.type === 'image') {
      const form = new FormData();
      form.append('image', query.file, query.file.name || 'pasted-image');
      form.append('params', JSON.stringify(options));
      return [`${url}/image`, { method: 'POST', headers, body: form }];
    }
    const body = query.type === 'text' ? { text: query.text, ...options } : { like: query.id, ...options };
    headers['Content-Type'] = 'application/json';
    return [url, { method: 'POST', headers, body: JSON.stringify(body) }];
  }

  // ---------- running a search ----------

  function abortSearch() {
    if (state.controller) state.controller.abort();
    state.controller = null;
  }

  function setBusy(busy) {
    els.results.setAttribute('aria-busy', String(busy));
    els.submit.disabled = busy;
    document.body.classList.toggle('busy', busy);
    if (busy) {
      els.prev.disabled = true;
      els.next.disabled = true;
    }
  }

  function resetOutput() {
    renderResults([], '');
    renderFacets(null);
    els.latency.textContent = '';
    els.plugins.replaceChildren();
    updatePager(0);
  }

  async function runQuery(query, offset, opts = {}) {
    state.query = query;
    state.offset = offset;
    els.summary.textContent = describeQuery(query);
    clearError();

    const key = els.key.value.trim();
    const tenant = els.tenant.value.trim();
    let problem = null;
    if (!key) problem = ['no_key', 'Enter an API key to search.', els.key];
    else if (/[^\x21-\x7e]/.test(key)) problem = ['invalid_key', 'The API key contains characters that cannot be sent; check that it was pasted whole.', els.key];
    else if (!tenant) problem = ['no_tenant', 'Enter a tenant to search.', els.tenant];
    if (problem) {
      abortSearch();
      setBusy(false);
      resetOutput();
      setStatus('');
      showError(problem[0], problem[1]);
      problem[2].focus();
      return;
    }

    abortSearch();
    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    setStatus('Searching…');
    els.latency.textContent = '';
    els.plugins.replaceChildren();

    const [url, init] = buildRequest(query, offset, key, tenant);
    const started = performance.now();
    let response;
    let body = null;
    try {
      response = await fetch(url, { ...init, signal: controller.signal, credentials: 'omit', cache: 'no-store' });
      const text = await response.text();
      if (text) {
        try {
          body = JSON.parse(text);
        } catch {
          body = null;
        }
      }
    } catch {
      if (controller.signal.aborted) return; // a newer query took over
      finish(controller);
      resetOutput();
      setStatus('');
      showError('network', 'Could not reach the search service. Check your connection and try again.');
      if (opts.focusSummary) els.summary.focus();
      return;
    }
    if (controller.signal.aborted || state.controller !== controller) return;
    const roundTrip = performance.now() - started;
    finish(controller);

    if (!response.ok) {
      resetOutput();
      setStatus('');
      showHttpError(response, body, tenant);
    } else if (!body || !Array.isArray(body.hits)) {
      resetOutput();
      setStatus('');
      showError('bad_response', 'The server sent an answer this page does not understand.');
    } else {
      showResults(body, roundTrip, key);
    }
    if (opts.focusSummary) els.summary.focus();
  }

  function finish(controller) {
    if (state.controller === controller) state.controller = null;
    setBusy(false);
  }

  function showHttpError(response, body, tenant) {
    const error = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : {};
    const code = typeof error.code === 'string' && error.code ? error.code : `http_${response.status}`;
    const serverMessage =
      typeof error.message === 'string' && error.message ? error.message : `HTTP ${response.status} ${response.statusText}`.trim();
    const retry = retryAfterSeconds(response.headers.get('Retry-After'));
    let message;
    switch (response.status) {
      case 401:
        message = 'The API key was not accepted: it is missing or unknown. Check the key and try again.';
        break;
      case 403:
        message = `This key may not search tenant "${tenant}": it lacks the search scope or belongs to another tenant.`;
        break;
      case 429:
        message = retry === null ? 'Too many searches; try again shortly.' : `Too many searches; try again in ${retry} s.`;
        break;
      case 503:
        message = `The service is not ready yet (${serverMessage}); try again shortly.`;
        break;
      default:
        message = serverMessage;
    }
    showError(code, message);
  }

  function showResults(body, roundTrip, key) {
    const hits = body.hits.filter((hit) => hit && typeof hit === 'object' && hit.product);
    renderResults(hits, key);
    noteCategories(hits);
    let mode = typeof body.mode === 'string' ? `${body.mode} search, ` : '';
    const w = body.weights;
    if (w && typeof w === 'object') {
      const part = (name) => (typeof w[name] === 'number' ? `${name} ${w[name]}` : null);
      const parts = ['keyword', 'text', 'image'].map(part).filter(Boolean);
      if (parts.length) mode = `${body.mode} search (${parts.join(', ')}), `;
    }
    els.latency.textContent = `${mode}${formatMs(body.took_ms)} ms on the server, ${Math.round(roundTrip)} ms round trip`;
    renderPlugins(body.plugins);
    if (state.offset === 0) renderFacets(body.facets);
    if (hits.length === 0) {
      setStatus(state.offset === 0 ? 'No products match.' : 'No products match on this page.');
    } else {
      const first = state.offset + 1;
      const last = state.offset + hits.length;
      setStatus(`Showing ${hits.length === 1 ? 'result' : 'results'} ${first}–${last}.`);
    }
    updatePager(hits.length);
  }

  function updatePager(count) {
    els.pageNumber.textContent = `Page ${Math.floor(state.offset / PAGE_SIZE) + 1}`;
    els.prev.disabled = state.offset === 0;
    els.next.disabled = count < PAGE_SIZE || state.offset + PAGE_SIZE > MAX_OFFSET;
  }

  function renderPlugins(plugins) {
    const entries =
      plugins && typeof plugins === 'object' ? Object.entries(plugins).filter(([, p]) => p && typeof p === 'object') : [];
    if (entries.length === 0) {
      els.plugins.replaceChildren(el('li', 'plugin none', 'no plugins'));
      return;
    }
    els.plugins.replaceChildren(
      ...entries.map(([kind, p]) => {
        const outcome = String(p.outcome ?? 'unknown');
        const error = p.error ? ` (${p.error})` : '';
        return el('li', `plugin ${outcome === 'ok' ? 'ok' : 'fallback'}`, `${kind} ${p.name}@${p.version}: ${outcome}${error}`);
      }),
    );
  }

  // ---------- facets ----------

  function facetButton(label, count, pressed, onClick) {
    const item = el('li', 'facet-value');
    const button = el('button', 'facet-button', label);
    button.type = 'button';
    button.setAttribute('aria-pressed', String(pressed));
    button.addEventListener('click', onClick);
    item.append(button, el('span', 'facet-count', String(count)));
    return item;
  }

  function formatPrice(n) {
    return Number.isFinite(n) ? String(n) : '';
  }

  function renderFacets(facets) {
    if (!facets || typeof facets !== 'object') {
      els.facets.hidden = true;
      return;
    }
    const list = (v) => (Array.isArray(v) ? v.filter((x) => x && typeof x === 'object' && typeof x.count === 'number') : []);
    const current = els.category.value.trim();
    els.facetCategory.replaceChildren(
      ...list(facets.category).map((f) =>
        facetButton(String(f.value), f.count, String(f.value) === current, () => {
          els.category.value = String(f.value) === current ? '' : String(f.value);
          submitCurrent();
        }),
      ),
    );
    els.facetPrice.replaceChildren(
      ...list(facets.price)
        .filter((b) => b.count > 0)
        .map((b) => {
          const from = typeof b.from === 'number' ? b.from : null;
          const to = typeof b.to === 'number' ? b.to : null;
          const label = from === null ? `under ${formatPrice(to)}` : to === null ? `${formatPrice(from)} and up` : `${formatPrice(from)} to ${formatPrice(to)}`;
          const pressed = els.priceMin.value === (from === null ? '' : String(from)) && els.priceMax.value === (to === null ? '' : String(to));
          return facetButton(label, b.count, pressed, () => {
            els.priceMin.value = pressed || from === null ? '' : String(from);
            // The bucket excludes its upper bound; the filter includes it (a product at exactly `to` may show).
            els.priceMax.value = pressed || to === null ? '' : String(to);
            submitCurrent();
          });
        }),
    );
    els.facetStock.replaceChildren(
      ...list(facets.in_stock).map((f) =>
        facetButton(f.value ? 'in stock' : 'sold out', f.count, f.value === true && els.inStock.checked, () => {
          els.inStock.checked = f.value === true && !els.inStock.checked;
          submitCurrent();
        }),
      ),
    );
    els.facets.hidden = false;
  }

  function noteCategories(hits) {
    let added = false;
    for (const { product } of hits) {
      if (typeof product.category === 'string' && product.category && !state.categories.has(product.category)) {
        state.categories.add(product.category);
        added = true;
      }
    }
    if (!added) return;
    const sorted = Array.from(state.categories).sort((a, b) => a.localeCompare(b)).slice(0, 500);
    els.categories.replaceChildren(
      ...sorted.map((category) => {
        const option = document.createElement('option');
        option.value = category;
        return option;
      }),
    );
  }

  // ---------- results ----------

  function releaseResultImages() {
    if (state.imagesController) state.imagesController.abort();
    state.imagesController = new AbortController();
    for (const url of state.resultUrls) URL.revokeObjectURL(url);
    state.resultUrls = [];
  }

  function renderResults(hits, key) {
    releaseResultImages();
    const signal = state.imagesController.signal;
    const fragment = document.createDocumentFragment();
    for (const hit of hits) fragment.append(renderHit(hit, key, signal));
    els.results.replaceChildren(fragment);
  }

  function renderHit(hit, key, signal) {
    const product = hit.product;
    const id = String(product.external_id ?? '');
    const title = typeof product.title === 'string' && product.title ? product.title : id || 'Untitled product';

    const item = el('div', 'result');
    item.setAttribute('role', 'listitem');
    item.dataset.id = id;

    const thumb = el('div', 'thumb');
    fillImage(thumb, product, title, key, signal);

    const info = el('div', 'info');
    info.append(el('h3', 'title', title));
    const price = product.price === null || product.price === undefined ? null : String(product.price);
    const priceText = price === null ? 'No price' : [price, product.currency].filter(Boolean).join(' ');
    info.append(el('p', price === null ? 'price missing' : 'price', priceText));
    const facts = el('p', 'facts');
    facts.append(el('span', 'category', product.category ? String(product.category) : 'Uncategorised'));
    if (product.in_stock === false) facts.append(el('span', 'stock out', 'Out of stock'));
    info.append(facts);
    const score = Number(hit.score);
    info.append(el('p', 'score', `Score ${Number.isFinite(score) ? score.toFixed(3) : '?'}`));

    const more = el('button', 'more-like-this', 'More like this');
    more.type = 'button';
    more.setAttribute('aria-label', `More like this: ${title}`);
    more.addEventListener('click', () => startLike(id, title));

    item.append(thumb, info, more);
    return item;
  }

  function placeholder(title) {
    const box = el('div', 'placeholder');
    box.setAttribute('role', 'img');
    box.setAttribute('aria-label', `No image for ${title}`);
    return box;
  }

  function makeImg(src, title, thumb, remote) {
    const img = document.createElement('img');
    img.alt = title;
    img.decoding = 'async';
    if (remote) {
      img.referrerPolicy = 'no-referrer';
      img.loading = 'lazy';
    }
    img.addEventListener('error', () => thumb.replaceChildren(placeholder(title)), { once: true });
    img.src = src;
    return img;
  }

  function fillImage(thumb, product, title, key, signal) {
    const stored = product.stored_image;
    const path = stored && typeof stored.path === 'string' ? stored.path : '';
    // Only ever send the key to this origin.
    if (sameOrigin(path)) {
      const box = placeholder(title);
      box.classList.add('loading');
      thumb.append(box);
      loadStoredImage(thumb, path, title, key, signal);
    } else if (typeof product.image_url === 'string' && /^https?:\/\//i.test(product.image_url)) {
      thumb.append(makeImg(product.image_url, title, thumb, true));
    } else {
      thumb.append(placeholder(title));
    }
  }

  function sameOrigin(path) {
    if (!path.startsWith('/')) return false;
    try {
      return new URL(path, window.location.origin).origin === window.location.origin;
    } catch {
      return false;
    }
  }

  async function loadStoredImage(thumb, path, title, key, signal) {
    try {
      const url = `${path}${path.includes('?') ? '&' : '?'}size=256`;
      const response = await fetch(url, { headers: { Authorization: `Bearer ${key}` }, signal, credentials: 'omit' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const blob = await response.blob();
      if (signal.aborted) return;
      const objectUrl = URL.createObjectURL(blob);
      state.resultUrls.push(objectUrl);
      thumb.replaceChildren(makeImg(objectUrl, title, thumb, false));
    } catch {
      if (!signal.aborted) thumb.replaceChildren(placeholder(title));
    }
  }

  // ---------- query image ----------

  function setPreview(file) {
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);
    els.previewImg.src = state.previewUrl;
    els.previewName.textContent = file.name || 'Pasted image';
    els.preview.hidden = false;
  }

  function dropPreview() {
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    els.previewImg.removeAttribute('src');
    els.previewName.textContent = '';
    els.preview.hidden = true;
  }

  function useImageFile(file) {
    if (!file) return;
    if (!isImageFile(file)) {
      showError('not_an_image', 'That file is not an image. Use a JPEG, PNG, WebP or GIF file.');
      return;
    }
    if (file.size > MAX_IMAGE_BYTES) {
      showError('image_too_large', 'That image is larger than 20 MiB; choose a smaller one.');
      return;
    }
    setPreview(file);
    state.qDirty = false;
    const query = withFilters({ type: 'image', file });
    if (query) runQuery(query, 0);
  }

  // ---------- entry points ----------

  function submitCurrent() {
    const text = els.q.value.trim();
    let base = null;
    if (text && (state.qDirty || !state.query)) {
      base = { type: 'text', text };
      dropPreview();
    } else if (state.query) {
      base = state.query;
    }
    if (!base) {
      clearError();
      setStatus('Type something to search for, or choose an image.');
      els.q.focus();
      return;
    }
    const query = withFilters(base);
    if (!query) return;
    if (query.type === 'text') state.qDirty = false;
    runQuery(query, 0);
  }

  function startLike(id, title) {
    if (!id) return;
    dropPreview();
    state.qDirty = false;
    const query = withFilters({ type: 'like', id, title });
    if (query) runQuery(query, 0, { focusSummary: true });
  }

  function turnPage(delta) {
    if (!state.query) return;
    const offset = Math.min(MAX_OFFSET, Math.max(0, state.offset + delta * PAGE_SIZE));
    runQuery(state.query, offset, { focusSummary: true });
  }

  function bindEvents() {
    els.settingsForm.addEventListener('submit', (event) => {
      event.preventDefault();
      if (state.query) submitCurrent();
    });
    els.key.addEventListener('input', () => storageSet(STORE_KEY, els.key.value.trim()));
    els.tenant.addEventListener('input', () => storageSet(STORE_TENANT, els.tenant.value.trim()));
    els.tenant.addEventListener('change', () => {
      state.categories.clear();
      els.categories.replaceChildren();
    });
    els.forgetKey.addEventListener('click', () => {
      els.key.value = '';
      storageSet(STORE_KEY, '');
      setStatus('The key is forgotten in this tab.');
      els.key.focus();
    });

    els.form.addEventListener('submit', (event) => {
      event.preventDefault();
      submitCurrent();
    });
    els.q.addEventListener('input', () => {
      state.qDirty = true;
    });
    els.apply.addEventListener('click', submitCurrent);

    els.imageInput.addEventListener('change', () => {
      const file = els.imageInput.files && els.imageInput.files[0];
      els.imageInput.value = ''; // choosing the same file again still fires "change"
      useImageFile(file);
    });
    els.clearImage.addEventListener('click', () => {
      dropPreview();
      if (state.query && state.query.type === 'image') {
        if (state.controller) {
          abortSearch();
          setBusy(false);
          updatePager(0);
        }
        state.query = null;
      }
      state.qDirty = true;
      setStatus('Image cleared. Type a search and press Enter.');
      els.q.focus();
    });

    // Drag and drop: anywhere on the page, highlighting the drop zone.
    let dragDepth = 0;
    const carriesFiles = (event) => Array.from((event.dataTransfer && event.dataTransfer.types) || []).includes('Files');
    const setDragging = (on) => {
      els.dropZone.classList.toggle('dragging', on);
      document.body.classList.toggle('dragging', on);
    };
    document.addEventListener('dragenter', (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      dragDepth += 1;
      setDragging(true);
    });
    document.addEventListener('dragover', (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
    });
    document.addEventListener('dragleave', (event) => {
      if (!carriesFiles(event)) return;
      dragDepth = Math.max(0, dragDepth - 1);
      if (dragDepth === 0) setDragging(false);
    });
    document.addEventListener('drop', (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      dragDepth = 0;
      setDragging(false);
      const file = firstImage(event.dataTransfer.files);
      if (file) useImageFile(file);
      else showError('not_an_image', 'That file is not an image. Use a JPEG, PNG, WebP or GIF file.');
    });

    // Paste: anywhere but a text field, or in the search box when the clipboard holds an image file.
    document.addEventListener('paste', (event) => {
      const active = document.activeElement;
      if (isTextEntry(active) && active !== els.q) return;
      const data = event.clipboardData;
      if (!data) return;
      let file = firstImage(data.files);
      if (!file) {
        for (const item of Array.from(data.items || [])) {
          if (item.kind === 'file' && item.type.startsWith('image/')) {
            file = item.getAsFile();
            if (file) break;
          }
        }
      }
      if (!file) return;
      event.preventDefault();
      useImageFile(file);
    });

    els.prev.addEventListener('click', () => turnPage(-1));
    els.next.addEventListener('click', () => turnPage(1));
  }

  restoreSettings();
  bindEvents();
})();
