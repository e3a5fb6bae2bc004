// opamp dashboard: live sections over Server-Sent Events, and confirmations for abort.
// Served from the binary; the Content-Security-Policy allows no other script.
'use strict';

(function () {
  const indicator = document.getElementById('live');

  function bindConfirms(root) {
    root.querySelectorAll('form[data-confirm]').forEach(function (form) {
      form.addEventListener('submit', function (event) {
        if (!window.confirm(form.dataset.confirm)) {
          event.preventDefault();
        }
      });
    });
  }

  // Replaces a live section's content, but not while the operator is typing in it (an abort
  // reason): the newest content is applied when the field loses focus.
  function liveSection(section) {
    let pending = null;
    function apply(html) {
      const active = document.activeElement;
      if (active && section.contains(active) && active.tagName === 'INPUT') {
        pending = html;
        return;
      }
      section.innerHTML = html;
      bindConfirms(section);
    }
    section.addEventListener('focusout', function () {
      if (pending !== null) {
        const html = pending;
        pending = null;
        window.setTimeout(function () { apply(html); }, 0);
      }
    });
    const source = new EventSource(section.dataset.live);
    source.addEventListener(section.dataset.event, function (event) { apply(event.data); });
    source.addEventListener('end', function () {
      source.close();
      if (indicator) { indicator.className = 'live done'; }
    });
    source.addEventListener('open', function () {
      if (indicator) { indicator.className = 'live on'; }
    });
    source.addEventListener('error', function () {
      if (indicator && source.readyState !== EventSource.CLOSED && indicator.className !== 'live done') {
        indicator.className = 'live off';
      }
    });
  }

  bindConfirms(document);
  document.querySelectorAll('[data-live]').forEach(liveSection);
})();
