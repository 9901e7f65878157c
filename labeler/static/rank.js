// The Rank tab's controller. The server renders each screen as one HTML block (.rl-task, from
// labeler/render.py) and answers the page's actions as JSON (labeler/rank_api.py); this script
// puts each screen into #rl-screen, keeps the ranks in the browser until submit, and runs the
// keyboard, the layout, expand, the guidelines panel, the draft saves, the active time and
// the polling of the waiting screen.
(() => {
  let root = null;
  let st = null;
  let cursor = 0;
  let draftTimer = null;
  let pollTimer = null;
  let shownKey = null;
  let screenSeq = 0;  // only the answer to the latest screen request is shown
  let started = false;
  const DRAFT_DELAY_MS = 600;
  const POLL_MS = 3000;
  // Active time on a task: the page is visible and was used (a key, a click, a scroll) within
  // the last IDLE_MS; a reader who stops for longer counts as away until the next input.
  const IDLE_MS = 60000;
  const TICK_MS = 1000;
  const SCREEN_ACTIONS = new Set(['screen', 'submit', 'skip', 'reopen']);

  const visible = (el) => !!el && el.isConnected && el.getClientRects().length > 0;
  const q = (sel) => (root ? root.querySelector(sel) : null);
  const qa = (sel) => (root ? [...root.querySelectorAll(sel)] : []);
  const ranking = () => st && (st.mode === 'task' || st.mode === 'revise');
  const host = (id) => document.getElementById(id);

  // --- talking to the server ------------------------------------------------------------
  const showError = (text) => {
    const box = q('#rl-message');
    if (!box) return;
    box.className = 'rl-msg rl-msg-error';
    box.setAttribute('role', 'alert');
    box.textContent = text;  // the server's sentence, shown as text
  };
  const post = async (action, payload) => {
    let response;
    try {
      response = await fetch(new URL('rank/api/' + action, document.baseURI), {
        method: 'POST', credentials: 'same-origin', cache: 'no-store',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify(payload === undefined ? {} : payload)});
    } catch (error) {  // no answer at all: the network, or the app restarting
      throw new Error('the app could not be reached; try again in a moment');
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(answer.error || `the server answered ${response.status}`);
    }
    return answer;
  };
  const send = async (action, payload) => {
    const seq = SCREEN_ACTIONS.has(action) ? ++screenSeq : null;
    try {
      const answer = await post(action, payload);
      if (seq !== null && seq === screenSeq) showScreen(answer.html);
      else if (action === 'diff') showDiff(answer.html);
      return answer;
    } catch (error) {
      if (seq !== null && seq !== screenSeq) return null;
      if (st) { st.busy = false; st.opening = false; }
      const button = q('#rl-submit');
      if (button) { button.disabled = false; button.textContent = button.dataset.label || 'Submit'; }
      showError(`Not done — ${error.message || error}.`);
      // The waiting screen keeps asking, so that it still updates by itself once the app is back.
      if (st && st.mode === 'waiting' && action === 'screen') {
        clearTimeout(pollTimer);
        pollTimer = setTimeout(() => send('screen', {open: true}), POLL_MS);
      }
      return null;
    }
  };
  const entry = () => ({
    assignment_id: st.assignment,
    ranks: st.ranks.slice(),
    all_bad: st.allBad,
    rationale: q('#rl-rationale')?.value || '',
    demonstration: q('#rl-demonstration')?.value || '',
    revises: st.revises,
  });
  const setDraftState = (text) => {
    const box = q('#rl-draft-state');
    if (box) box.textContent = text;
  };
  const saveDraftSoon = () => {
    if (!ranking()) return;
    clearTimeout(draftTimer);
    setDraftState('· not saved yet');
    const screen = st;
    draftTimer = setTimeout(async () => {
      draftTimer = null;
      setDraftState('· saving draft…');
      const answer = await send('draft', entry());
      if (screen !== st || draftTimer) return;  // another screen, or another change since
      setDraftState(answer && answer.draft === 'saved' ? '· draft saved' : '· draft not saved');
    }, DRAFT_DELAY_MS);
  };
  const submit = () => {
    if (!ranking() || st.busy) return;
    clearTimeout(draftTimer);
    draftTimer = null;
    st.busy = true;
    const button = q('#rl-submit');
    if (button) {
      button.dataset.label = button.textContent;
      button.disabled = true;
      button.textContent = 'Saving…';
    }
    send('submit', {...entry(), active_seconds: activeSeconds()});
  };
  const skip = () => {
    if (!st || st.mode !== 'task' || st.busy) return;
    clearTimeout(draftTimer);
    st.busy = true;
    send('skip', {assignment_id: st.assignment});
  };

  // --- active time -------------------------------------------------------------------------
  let activeMs = 0;
  let lastInput = 0;
  let lastTick = performance.now();
  let wasVisible = document.visibilityState === 'visible';
  // Adds the time since the last tick if the page was visible then and used recently.
  const account = () => {
    const now = performance.now();
    if (wasVisible && now - lastInput <= IDLE_MS) activeMs += Math.min(now - lastTick, IDLE_MS);
    lastTick = now;
    wasVisible = document.visibilityState === 'visible';
  };
  const activeSeconds = () => { account(); return Math.round(activeMs / 100) / 10; };
  const used = () => { account(); lastInput = performance.now(); };
  ['keydown', 'pointerdown', 'wheel', 'touchstart', 'input'].forEach((type) =>
    document.addEventListener(type, used, {capture: true, passive: true}));
  window.addEventListener('scroll', used, {capture: true, passive: true});
  document.addEventListener('visibilitychange', account);
  setInterval(account, TICK_MS);

  // --- painting the state onto the server's HTML ------------------------------------------
  const letter = (i) => q(`#rl-rank-${i} .rl-bar-letter`)?.textContent || String(i + 1);
  // The ranking as it would be stored: "B > A = C > D", ties joined by "=".
  const orderText = () => {
    const ranked = [...Array(st.k).keys()].filter((i) => st.ranks[i]);
    ranked.sort((a, b) => st.ranks[a] - st.ranks[b] || a - b);
    const groups = [];
    ranked.forEach((i) => {
      const last = groups[groups.length - 1];
      if (last && st.ranks[last[0]] === st.ranks[i]) last.push(i); else groups.push([i]);
    });
    const missing = [...Array(st.k).keys()].filter((i) => !st.ranks[i]);
    let text = groups.map((g) => g.map(letter).join(' = ')).join(' > ');
    if (missing.length) {
      text += (text ? ' · ' : '') + missing.map(letter).join(', ') + ' not ranked';
    }
    return {text, ties: groups.filter((g) => g.length > 1)};
  };
  const paint = () => {
    if (!ranking()) return;
    const {text, ties} = orderText();
    const tiedWith = {};
    ties.forEach((g) => g.forEach((i) => { tiedWith[i] = g.filter((j) => j !== i); }));
    qa('.rl-rank-btn').forEach((b) => {
      const on = st.ranks[+b.dataset.index] === +b.dataset.rank;
      b.setAttribute('aria-pressed', on ? 'true' : 'false');
    });
    qa('.rl-rank-pill').forEach((p) => {
      const r = st.ranks[+p.dataset.index];
      const tie = tiedWith[+p.dataset.index];
      p.textContent = r ? `Rank ${r}` + (tie ? ` · tie with ${tie.map(letter).join(', ')}` : '')
        : 'Not ranked';
      p.classList.toggle('rl-unranked', !r);
      p.classList.toggle('rl-tied', !!tie);
    });
    qa('.rl-bar-item').forEach((el) => el.classList.toggle('rl-tied', !!tiedWith[+el.dataset.index]));
    const order = q('#rl-order');
    if (order) order.textContent = (st.allBad ? 'All bad' + (text ? ' · ' : '') : '') + text;
    const tieNote = q('#rl-tie-note');
    if (tieNote) {
      tieNote.textContent = ties.map((g) => `${g.map(letter).join(' and ')} share rank ` +
                                             `${st.ranks[g[0]]} (a tie)`).join(' · ');
    }
    q('#rl-bar')?.classList.toggle('rl-all-bad-on', st.allBad);
    q('#rl-bar-all-bad')?.setAttribute('aria-pressed', st.allBad ? 'true' : 'false');
    qa('.rl-candidate, .rl-bar-item').forEach((el) => {
      const i = +el.dataset.index;
      el.classList.toggle('rl-current', i === cursor);
      if (st.ranks[i]) el.classList.remove('rl-missing');
    });
    const allBad = q('#rl-all-bad');
    if (allBad) allBad.checked = st.allBad;
    const note = q('#rl-suggestion');
    if (note && st.changed) {
      note.classList.add('rl-suggestion-changed');
      note.textContent = 'You changed the suggested ranks: your ranking is stored as your own.';
    }
  };
  const setRank = (index, rank, toggle) => {
    if (index < 0 || index >= st.k || rank < 1 || rank > st.k) return;
    st.ranks[index] = toggle && st.ranks[index] === rank ? null : rank;
    st.changed = st.changed || st.suggested;
    paint();
    saveDraftSoon();
  };
  const move = (delta) => {
    cursor = Math.max(0, Math.min(st.k - 1, cursor + delta));
    paint();
    const card = q('#rl-cand-' + cursor);
    // With a candidate expanded, the expanded view follows the highlight: a rank always goes
    // to the candidate on screen.
    if (card && q('.rl-candidate.rl-expanded') && !card.classList.contains('rl-expanded')) {
      expand(cursor);
    } else if (card && !card.classList.contains('rl-expanded')) {
      const box = card.getBoundingClientRect();
      if (box.top > window.innerHeight * 0.6 || box.bottom < 80) {
        card.scrollIntoView({block: 'start'});
      }
    }
  };
  const expand = (index) => {
    const card = q('#rl-cand-' + index);
    if (!card) return;
    const open = !card.classList.contains('rl-expanded');
    qa('.rl-candidate.rl-expanded').forEach((c) => setExpanded(c, false));
    setExpanded(card, open);
  };
  const setExpanded = (card, open) => {
    card.classList.toggle('rl-expanded', open);
    // Expanded, a long text shows whole (not its preview): it is what the window is for.
    if (open) card.querySelectorAll('.rl-cand-body .rl-long > details').forEach((d) => { d.open = true; });
    document.documentElement.classList.toggle('rl-overlay-open', open);
    const button = card.querySelector('[data-rl-action=expand]');
    if (button) {
      button.textContent = open ? 'Close' : 'Expand';
      button.setAttribute('aria-expanded', open ? 'true' : 'false');
    }
  };
  const closeOverlays = () => {
    qa('.rl-candidate.rl-expanded').forEach((c) => setExpanded(c, false));
    document.querySelectorAll('#rl-diff .rl-diff-overlay').forEach((d) => d.classList.add('rl-closed'));
  };
  const guideOpen = () => !!q('#rl-guidelines:not(.rl-closed)');
  const toggleGuide = (open) => {
    const panel = q('#rl-guidelines');
    if (!panel) return;
    const show = open === undefined ? panel.classList.contains('rl-closed') : open;
    panel.classList.toggle('rl-closed', !show);
    q('#rl-guide-btn')?.setAttribute('aria-expanded', show ? 'true' : 'false');
    const mark = q('#rl-guide-new');
    if (show && mark) {  // read now: no longer marked as changed, here and on later screens
      mark.remove();
      send('guidelines', {version: panel.dataset.version});
    }
  };
  // Keys go to the task again (a button, a checkbox, a select keep focus after a click).
  const focusTask = () => {
    if (root && visible(root) && root.isConnected) root.focus({preventScroll: true});
  };
  const TEXT_FIELDS = 'textarea, input:not([type=checkbox]):not([type=radio]), select, ' +
                      '[contenteditable]';
  const askDiff = (a, b) => {
    if (!ranking() || a === b) return;
    send('diff', {assignment_id: st.assignment, a, b});
  };
  const showDiff = (html) => {
    const box = host('rl-diff-body');
    if (box) box.innerHTML = html;  // rendered and escaped by the server (labeler/render.py)
    if (html) focusTask();
  };
  const setLayout = (layout) => {
    root.className = root.className.replace(/\brl-layout-[\w-]+/, 'rl-layout-' + layout);
    qa('[data-rl-action=layout]').forEach((b) =>
      b.setAttribute('aria-pressed', b.dataset.layout === layout ? 'true' : 'false'));
    send('layout', {layout});
  };

  // --- a new screen from the server ----------------------------------------------------------
  const showScreen = (html) => {
    const box = host('rl-screen-body');
    if (!box) return;
    box.innerHTML = html;  // rendered and escaped by the server (labeler/render.py)
    showDiff('');
    const el = box.querySelector('.rl-task');
    if (el) init(el);
  };
  // The ranking bar covers the bottom of the window: the page, an expanded candidate, the
  // differences and the guidelines end above it, whatever its height (a phone wraps it).
  let barObserver = null;
  const watchBar = () => {
    barObserver?.disconnect();
    const bar = q('#rl-bar');
    if (!bar || !window.ResizeObserver) return;
    barObserver = new ResizeObserver(() => {
      document.documentElement.style.setProperty('--rl-bar-h', `${bar.offsetHeight}px`);
    });
    barObserver.observe(bar);
  };
  const init = (el) => {
    root = el;
    const data = el.dataset;
    activeMs = 0;
    lastTick = performance.now();
    st = {mode: data.mode, assignment: data.assignment ? +data.assignment : null,
          k: +(data.k || 0), revises: data.revises ? +data.revises : null,
          ranks: [], allBad: false, suggested: false, changed: false, busy: false};
    if (data.state) {
      const state = JSON.parse(data.state);
      st.ranks = state.ranks.map((r) => (r ? +r : null));
      st.allBad = !!state.all_bad;
      st.suggested = !!state.suggested;
    }
    cursor = 0;
    const hadFocus = document.activeElement;
    document.documentElement.classList.remove('rl-overlay-open');
    paint();
    watchBar();
    // The new screen takes the keys, unless the user is typing somewhere else on the page.
    if (!hadFocus || hadFocus === document.body || !hadFocus.isConnected ||
        hadFocus.closest('#rl-screen')) focusTask();
    clearTimeout(pollTimer);
    // Nothing to rank yet (the first run, an empty queue): ask again until there is.
    if (st.mode === 'waiting') pollTimer = setTimeout(() => send('screen', {open: true}), POLL_MS);
    const key = `${st.mode}:${st.assignment}:${st.revises}`;
    if (key !== shownKey) {
      shownKey = key;
      if (visible(el)) {
        // A new task opens at its top (the message and the prompt), wherever the last ended.
        requestAnimationFrame(() => {
          const top = el.getBoundingClientRect().top + window.scrollY - 8;
          window.scrollTo({top: Math.max(0, top), behavior: 'instant'});
        });
      }
    }
  };
  // An admin's Rank tab takes a task from the queue only once they open it: checked after each
  // click or key of theirs, never when the page itself switches tabs.
  const openIfIdle = () => {
    if (st && st.mode === 'idle' && !st.opening && visible(root)) {
      st.opening = true;
      send('screen', {open: true});
    }
  };
  // The first screen is asked for once the page has built the Rank tab; if the page re-creates
  // the tab's elements, the screen on show is moved into the new ones.
  const watch = () => {
    const box = host('rl-screen-body');
    if (!box) return;
    if (!started) { started = true; send('screen', {}); return; }
    // The same elements go back, with what was entered in them.
    if (root && !box.contains(root)) box.replaceChildren(root);
  };
  new MutationObserver(watch).observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener('DOMContentLoaded', watch);

  // --- mouse -----------------------------------------------------------------------------
  document.addEventListener('click', (event) => {
    setTimeout(openIfIdle, 50);  // a click on the Rank tab shows the idle screen
    const el = event.target.closest ? event.target : null;
    // Any control clicked in the task (a button, "Show all", a checkbox) hands the keys back
    // to the task, so that the number keys, Enter and Esc keep working; text fields keep them.
    const control = el && el.closest('button, summary, label, input, [data-rl-action]');
    if (control && control.closest('#rl-screen, #rl-diff') && !control.closest(TEXT_FIELDS) &&
        !(control.tagName === 'LABEL' && control.control && control.control.matches(TEXT_FIELDS))) {
      focusTask();
      setTimeout(focusTask, 0);  // after the control's own default action (a label's click)
    }
    const target = el && el.closest('[data-rl-action]');
    if (!target || target.closest('.rl-md')) return;  // never an action from rendered text
    const inScreen = target.closest('#rl-screen, #rl-diff');
    if (!inScreen) return;
    const action = target.dataset.rlAction;
    const index = +(target.dataset.index || 0);
    if (action === 'rank' && ranking()) { cursor = index; setRank(index, +target.dataset.rank, true); }
    else if (action === 'focus' && ranking()) { cursor = index; paint(); }
    else if (action === 'submit') submit();
    else if (action === 'skip') skip();
    else if (action === 'expand') { cursor = index; paint(); expand(index); }
    else if (action === 'all-bad' && ranking()) toggleAllBad();
    else if (action === 'guidelines') toggleGuide();
    else if (action === 'layout') setLayout(target.dataset.layout);
    else if (action === 'diff') askDiff(+q('#rl-diff-a').value, +q('#rl-diff-b').value);
    else if (action === 'close-diff') closeOverlays();
    else if (action === 'recent') send('reopen', {ranking_id: null});
    else if (action === 'reopen') send('reopen', {ranking_id: +target.dataset.ranking});
    else if (action === 'back') send('screen', {open: true});
  });
  const toggleAllBad = () => { st.allBad = !st.allBad; paint(); saveDraftSoon(); };
  document.addEventListener('change', (event) => {
    if (!ranking() || !root.contains(event.target)) return;
    if (event.target.id === 'rl-all-bad') {
      st.allBad = event.target.checked; paint(); saveDraftSoon();
    }
    if (event.target.tagName === 'SELECT') focusTask();  // a choice made: keys to the task
  });
  document.addEventListener('input', (event) => {
    if (!ranking() || !root.contains(event.target)) return;
    if (event.target.tagName === 'TEXTAREA') saveDraftSoon();
  });

  // --- keyboard --------------------------------------------------------------------------
  // Keys act only on a visible Rank tab, and never while focus is on something that takes
  // keys itself (a text field, a button, a link, a checkbox, a tab).
  const OWN_KEYS = 'input, textarea, select, button, a, summary, label, [contenteditable], ' +
                   '[role=tab], [role=button], [role=textbox]';
  document.addEventListener('keydown', (event) => {
    if (!root || !visible(root)) return;
    const t = event.target;
    const inScreen = t && t.closest && t.closest('#rl-screen, #rl-diff');
    const outside = t && t !== document.body && t !== root && !inScreen;
    // Ctrl/Cmd+Enter submits from anywhere in the task, a text field included.
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !outside && ranking()) {
      event.preventDefault(); submit(); return;
    }
    if (event.key === 'Escape' && !outside) {
      // One thing at a time: the guidelines, an overlay, then a text field.
      const open = guideOpen() || q('.rl-candidate.rl-expanded') ||
                   document.querySelector('#rl-diff .rl-diff-overlay:not(.rl-closed)');
      if (guideOpen()) toggleGuide(false); else closeOverlays();
      if (open || (t && t.closest && t.closest(TEXT_FIELDS))) { t.blur?.(); focusTask(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (t && t !== document.body && t !== root && t.closest && t.closest(OWN_KEYS)) return;
    if (outside) return;
    const key = event.key;
    if (key === '?') { toggleGuide(); event.preventDefault(); return; }
    if (!ranking()) return;
    if (/^[1-9]$/.test(key)) {
      if (+key <= st.k) { setRank(cursor, +key, false); move(1); }
    } else if (['ArrowRight', 'ArrowDown', 'j', 'J'].includes(key)) move(1);
    else if (['ArrowLeft', 'ArrowUp', 'k', 'K'].includes(key)) move(-1);
    else if (key === 'Enter') submit();
    else if ((key === 's' || key === 'S') && st.mode === 'task') skip();
    else if (key === 'x' || key === 'X') toggleAllBad();
    else if (key === 'r' || key === 'R') q('#rl-rationale')?.focus();
    else if (key === 'e' || key === 'E') expand(cursor);
    else if (key === 'd' || key === 'D') askDiff(cursor, (cursor + 1) % st.k);
    else return;
    event.preventDefault();
  });
  document.addEventListener('keyup', () => setTimeout(openIfIdle, 50));
})();
