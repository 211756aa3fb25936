// The pixel budget's arithmetic, exactly as seesay.images.PixelBudget.target_size does it on the
// server (transformers' smart_resize, and the closest tile grid where smart_resize overshoots).
// One visual token covers factor × factor pixels of the resized picture.

// Python's round(): halves go to the even neighbour.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function smartResize(width, height, { minPixels, maxPixels, factor: f }) {
  let hBar = roundHalfEven(height / f) * f;
  let wBar = roundHalfEven(width / f) * f;
  if (hBar * wBar > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    hBar = Math.max(f, Math.floor(height / beta / f) * f);
    wBar = Math.max(f, Math.floor(width / beta / f) * f);
  } else if (hBar * wBar < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    hBar = Math.ceil((height * beta) / f) * f;
    wBar = Math.ceil((width * beta) / f) * f;
  }
  return [wBar, hBar];
}

// Python's tuple order, as min() over (error, -area, long, short) uses it.
function lessThan(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

function closestFit(width, height, { minPixels, maxPixels, factor: f }) {
  const tiles = Math.floor(maxPixels / (f * f));
  const area = width * height;
  const scale = Math.sqrt(Math.min(Math.max(area, minPixels), maxPixels) / area) / f;
  const idealLong = Math.max(width, height) * scale;
  const idealShort = Math.min(width, height) * scale;
  let best = [Infinity, 0, 1, 1];
  for (let short = 1; short <= Math.floor(Math.sqrt(tiles)); short++) {
    const most = Math.floor(tiles / short);
    const candidates = new Set([Math.min(most, Math.max(1, Math.floor(idealLong))),
                                Math.min(most, Math.max(1, Math.ceil(idealLong)))]);
    for (const long of candidates) {
      const error = Math.log(short / idealShort) ** 2 + Math.log(long / idealLong) ** 2;
      const entry = [error, -long * short, long, short];
      if (lessThan(entry, best)) best = entry;
    }
  }
  const [long, short] = [best[2] * f, best[3] * f];
  return width >= height ? [long, short] : [short, long];
}

/** The [width, height] a width × height picture is resized to under the budget. */
export function targetSize(width, height, budget) {
  const [w, h] = smartResize(width, height, budget);
  if (w * h <= budget.maxPixels) return [w, h];
  return closestFit(width, height, budget);
}

/** The budget of a request that asks for at most maxPixels, as the server forms it. */
export function requestBudget(limits, maxPixels) {
  return { minPixels: Math.min(limits.min_pixels, maxPixels), maxPixels, factor: limits.factor };
}
