// The usage drill-down chart: reads its data from a JSON block (never executed), draws a
// stacked bar chart with the vendored Chart.js, and follows a bar's link on click.
(function () {
  "use strict";
  var source = document.getElementById("usage-chart-data");
  var canvas = document.getElementById("usage-chart");
  if (!source || !canvas || typeof Chart === "undefined") {
    return;
  }
  var data = JSON.parse(source.textContent);
  var palette = ["#2f6f9f", "#e07b39", "#4a9d5b", "#b84a62", "#7a5ea8", "#c9a227", "#3a9c9c", "#8c6d4f"];
  var highlighted = "#e07b39";
  var datasets = data.series.map(function (series, index) {
    var color = palette[index % palette.length];
    if (typeof data.highlight === "number") {
      color = series.data.map(function (_, day) { return day === data.highlight ? highlighted : "#9fb8cc"; });
    }
    return {
      label: series.label,
      data: series.data,
      backgroundColor: color,
      href: series.href
    };
  });
  var chart = new Chart(canvas, {
    type: "bar",
    data: { labels: data.labels, datasets: datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: { stacked: true, ticks: { callback: function (value) { return data.labels[value].slice(8); } } },
        y: { stacked: true, beginAtZero: true }
      },
      plugins: { legend: { position: "bottom", display: datasets.length > 1 } },
      onClick: function (event, elements) {
        if (!elements.length) { return; }
        var element = elements[0];
        var href = datasets[element.datasetIndex].href;
        if (!href && data.day_links) { href = data.day_links[element.index]; }
        if (href) { window.location.assign(href); }
      }
    }
  });
  canvas.dataset.ready = String(chart.data.datasets.length);
})();
