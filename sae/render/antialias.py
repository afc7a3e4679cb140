"""Analytic anti-aliasing along triangle edges: the pass that gives positions their gradients.

After the hard z-buffer a pixel's colour does not depend continuously on where an edge lies, so
geometry would get no gradient. Following the deferred approach of nvdiffrast (Laine et al.
2020), every pair of neighbouring pixels showing different faces is resolved as a 1-D box
filter along the pair's axis: the crossing of the boundary between the two pixel centres is
located analytically from the projected vertices (with gradients) and both pixels are blended
by how much of their box each surface covers. With the crossing at distance ``s`` from the
front pixel's centre, the back pixel gains ``(s − ½)·(c_front − c_back)`` when ``s > ½`` and the
front pixel loses ``(½ − s)·(c_front − c_back)`` when ``s < ½``: the image is continuous in the
edge position and its derivative is the box-filtered image's.

The boundary between the pair is found, in order, as

1. an edge of the front face crossing the segment (the usual silhouette or crease);
2. the intersection line of the two faces' planes, when each covers both centres (a wheel
   entering the body);
3. an edge of the other face (it ends between the two centres).

When the front face's crossing edge is a crease to a front-facing *sliver* that shows at neither
pixel (a side seen almost edge-on, a wheel's tread), the segment is followed through up to three
such faces to where it leaves them, and the sliver's colour fills that stretch of the box
filter; otherwise a sliver popping over a pixel centre would make the image jump.

An edge is used only by pixel pairs across its dominant direction (a mostly vertical edge by
horizontal pairs, and vice versa); using both directions would count its motion twice. Edges
between drawn faces of the same colour (a quad's diagonal, a cap's fan spokes) are no boundary
at all: the search walks through them, so a pair near a vertex finds the real boundary beyond
them, and never mistakes a diagonal for the silhouette next to it.
"""

from __future__ import annotations

import torch

from sae.render.raster import gather_rows as _take

_SLIVER_STEPS = 3


def _rows(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``x[rows]``; ``rows=None`` means every row."""
    return x if rows is None else x.index_select(0, rows)


def _entry(table: torch.Tensor, face: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``table[face, k]`` of a per-face ``(F, 3)`` table (vertex ids, neighbours)."""
    return table.reshape(-1).index_select(0, face * 3 + k)


def _pairs(face_map: torch.Tensor, depth: torch.Tensor, horizontal: bool):
    """Neighbour pairs across differing faces, their front member, and its face. No grad."""
    b, h, w = face_map.shape
    if horizontal:
        diff = face_map[:, :, :-1] != face_map[:, :, 1:]
        step = 1
    else:
        diff = face_map[:, :-1, :] != face_map[:, 1:, :]
        step = w
    nz = torch.nonzero(diff)
    ia = nz[:, 0] * (h * w) + nz[:, 1] * w + nz[:, 2]
    ib = ia + step
    fmap = face_map.reshape(-1)
    fa, fb = _take(fmap, ia), _take(fmap, ib)
    a_front = (fa >= 0) & ((fb < 0) | (_take(depth, ia) <= _take(depth, ib)))
    keep = torch.nonzero(a_front | (fb >= 0)).squeeze(1)
    nz, ia, ib, a_front = (_take(t, keep) for t in (nz, ia, ib, a_front))
    face = torch.where(a_front, _take(fa, keep), _take(fb, keep))
    return nz, ia, ib, a_front, face


class _Segments:
    """The pair segments of one direction: pixel centres at ``start`` and ``start + 1`` along
    axis ``ax`` (0 = u for horizontal pairs), at ``fixed`` on the cross axis ``cx``."""

    def __init__(self, nz: torch.Tensor, a_front: torch.Tensor, horizontal: bool, dtype: torch.dtype):
        self.horizontal = horizontal
        self.ax, self.cx = (0, 1) if horizontal else (1, 0)
        self.start = nz[:, 2 if horizontal else 1].to(dtype)
        self.fixed = nz[:, 1 if horizontal else 2].to(dtype)
        self.a_front = a_front

    def crossing(self, p: torch.Tensor, q: torch.Tensor, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the lines through ``p``→``q`` ``(K, 3)`` meet the cross line of segments ``rows``,
        as a coordinate on the pair axis, and whether the edge spans that line (no division by 0)."""
        ax, cx, fixed = self.ax, self.cx, _rows(self.fixed, rows)
        d_cx = q[:, cx] - p[:, cx]
        spans = ((p[:, cx] - fixed) * (q[:, cx] - fixed) <= 0) & (d_cx != 0)
        safe = torch.where(d_cx == 0, torch.ones_like(d_cx), d_cx)
        return p[:, ax] + (fixed - p[:, cx]) * (q[:, ax] - p[:, ax]) / safe, spans

    def distance(self, cross: torch.Tensor, rows) -> torch.Tensor:
        """Distance of a crossing from the front pixel's centre (0 at it, 1 at the back one)."""
        start = _rows(self.start, rows)
        return torch.where(_rows(self.a_front, rows), cross - start, start + 1 - cross)

    def dominant(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        d_ax, d_cx = (q[:, self.ax] - p[:, self.ax]).abs(), (q[:, self.cx] - p[:, self.cx]).abs()
        return d_cx >= d_ax if self.horizontal else d_cx > d_ax


def _edge_crossings(seg: _Segments, screen, faces, face, rows, dominant_only: bool = True, after=None):
    """For each segment ``rows``, the first edge ``k`` of triangle ``face`` crossing it (-1 for
    none), and the crossing's distance. With ``after``, only crossings beyond that distance
    count and the nearest is taken. No grad."""
    tri = _take(screen, _take(faces, face.clamp_min(0)))
    chosen = torch.full_like(face, -1)
    best = torch.full(face.shape, 2.0, dtype=screen.dtype, device=screen.device)
    for k in range(3):
        p, q = tri[:, k], tri[:, (k + 1) % 3]
        cross, spans = seg.crossing(p, q, rows)
        s = seg.distance(cross, rows)
        ok = (face >= 0) & spans & (s >= 0) & (s <= 1)
        if dominant_only:
            ok &= seg.dominant(p, q)
        if after is not None:
            ok &= (s > after + 1e-9) & (s < best)
        else:
            ok &= chosen < 0
        chosen = torch.where(ok, torch.full_like(chosen, k), chosen)
        best = torch.where(ok, s, best)
    return chosen, best


def _covers(screen, faces, face, px, py):
    """Whether each triangle ``face`` contains the point ``(px, py)``. No grad."""
    tri = _take(screen, _take(faces, face))
    u, v = tri[..., 0], tri[..., 1]
    e = torch.stack(
        [
            (u[:, (k + 1) % 3] - u[:, k]) * (py - v[:, k]) - (v[:, (k + 1) % 3] - v[:, k]) * (px - u[:, k])
            for k in range(3)
        ],
        dim=1,
    )
    return (e >= 0).all(dim=1) | (e <= 0).all(dim=1)


def _plane_crossing(seg: _Segments, planes, f1, f2, rows):
    """Where the inverse-depth planes of faces ``f1`` and ``f2`` meet on each segment's axis;
    ``start - 1`` (out of range) where they are parallel or the line is not dominant."""
    d = _take(planes, f1) - _take(planes, f2)
    along, across = (d[:, 0], d[:, 1]) if seg.horizontal else (d[:, 1], d[:, 0])
    dominant = along.abs() >= across.abs() if seg.horizontal else along.abs() > across.abs()
    ok = dominant & (along.abs() > 1e-12)
    safe = torch.where(ok, along, torch.ones_like(along))
    cross = -(across * _rows(seg.fixed, rows) + d[:, 2]) / safe
    return torch.where(ok, cross, _rows(seg.start, rows) - 1.0)


def antialias(
    image: torch.Tensor,
    face_map: torch.Tensor,
    depth: torch.Tensor,
    screen: torch.Tensor,
    faces: torch.Tensor,
    planes: torch.Tensor,
    neighbours: torch.Tensor | None = None,
    front_faces: torch.Tensor | None = None,
    face_color_at=None,
    background_at=None,
    row_of=None,
) -> torch.Tensor:
    """Anti-alias a rendered batch.

    Args:
        image: ``(B, H, W, 3)`` composited image (differentiable).
        face_map: ``(B, H, W)`` visible face per pixel, -1 for background.
        depth: ``(B, H, W)`` z-depth (only used to order pairs; not differentiated).
        screen: ``(Vt, 3)`` projected vertices ``(u, v, z)`` (differentiable).
        faces: ``(Ft, 3)`` vertex indices.
        planes: ``(Ft, 3)`` inverse-depth planes (:func:`~sae.render.raster.depth_planes`).
        neighbours: ``(Ft, 3)`` face across each edge (enables the sliver step), or None.
        front_faces: ``(Ft,)`` bool, the faces drawn; needed with ``neighbours``.
        face_color_at: callable ``(faces (K,), pixels (K,)) → (K, 3)``, a face's final colour as
            seen at a pixel; needed with ``neighbours``.
        background_at: optional callable, flat pixel indices ``(K,)`` → the final background
            colour ``(K, 3)`` there (what an object hides at that pixel).
        row_of: optional callable mapping flat pixel indices to rows of ``image`` when ``image``
            is ``(R, 3)``, the rows of a subset of the batch's pixels (every pixel of a pair
            across differing faces among them); None when ``image`` is the whole batch.

    Returns:
        the anti-aliased image, shaped as ``image``.
    """
    flat = image.reshape(-1, 3)
    if row_of is None:

        def row_of(idx: torch.Tensor) -> torch.Tensor:
            return idx

    fmap = face_map.reshape(-1)
    sc = screen.detach()
    slivers = neighbours is not None and front_faces is not None and face_color_at is not None
    targets, deltas = [], []
    for horizontal in (True, False):
        with torch.no_grad():
            nz, ia, ib, a_front, face = _pairs(face_map, depth.detach().reshape(-1), horizontal)
            if face.numel() == 0:
                continue
            seg = _Segments(nz, a_front, horizontal, screen.dtype)
            every = None  # rows: all of them
            other = torch.where(a_front, _take(fmap, ib), _take(fmap, ia))
            # 1) an edge of the front face
            if slivers:
                # the first real boundary: walk out of the front face through its own quad
                # diagonals and fan spokes (same colour on both sides), then keep the crossing
                # if its edge is dominant for this pair direction.
                front_px = torch.where(a_front, ia, ib)
                edge_face, edge_k, s1_est = _same_colour_walk(
                    seg, sc, faces, neighbours, front_faces, face, other, every, front_px, face_color_at
                )
            else:
                edge_k, s1_est = _edge_crossings(seg, sc, faces, face, every)
                edge_face = face.clone()
            own = edge_k >= 0
            # 2) the two faces' intersection, if the other face also covers the front centre
            todo = ~own & (other >= 0)
            plane_ok = torch.zeros_like(todo)
            if todo.any():
                front_at = torch.where(a_front, seg.start, seg.start + 1)
                px, py = (front_at, seg.fixed) if horizontal else (seg.fixed, front_at)
                cross = _plane_crossing(seg, planes.detach(), face, other.clamp_min(0), every)
                plane_ok = todo & _covers(sc, faces, other.clamp_min(0), px, py)
                plane_ok &= (cross >= seg.start) & (cross <= seg.start + 1)
            # 3) an edge of the other face
            todo = ~own & ~plane_ok & (other >= 0)
            if todo.any():
                k2, _ = _edge_crossings(seg, sc, faces, other.clamp_min(0), every)
                use = todo & (k2 >= 0)
                edge_k = torch.where(use, k2, edge_k)
                edge_face = torch.where(use, other, edge_face)
            by_edge = torch.nonzero(edge_k >= 0).squeeze(1)
            by_plane = torch.nonzero(plane_ok).squeeze(1)
            order = torch.cat([by_edge, by_plane])
            if order.numel() == 0:
                continue
            ek, ef = _take(edge_k, by_edge), _take(edge_face, by_edge)
            edge_v = (_entry(faces, ef, ek), _entry(faces, ef, (ek + 1) % 3))
            sliver = (
                _follow_slivers(seg, sc, faces, neighbours, front_faces, face, other, by_edge, own, ek, ef, s1_est)
                if slivers
                else None
            )

        # Differentiable crossings. Rows of `order`: edge pairs, then plane pairs.
        cross_e, _ = seg.crossing(_take(screen, edge_v[0]), _take(screen, edge_v[1]), by_edge)
        cross_p = _plane_crossing(seg, planes, _take(face, by_plane), _take(other, by_plane), by_plane)
        s1 = seg.distance(torch.cat([cross_e, cross_p]), order)
        a_fr = _take(a_front, order)
        ia_o, ib_o = _take(ia, order), _take(ib, order)
        front_idx = torch.where(a_fr, ia_o, ib_o)
        back_idx = torch.where(a_fr, ib_o, ia_o)
        c_front, c_back = _take(flat, row_of(front_idx)), _take(flat, row_of(back_idx))
        # Beyond the last crossing the front pixel's box shows the background at that pixel when
        # the back surface is background (known), else the back pixel's surface.
        c_hidden = c_back
        if background_at is not None:
            with torch.no_grad():
                onto_bg = torch.nonzero(_take(fmap, back_idx) < 0).squeeze(1)
            if onto_bg.numel():
                c_hidden = c_back.index_copy(0, onto_bg, background_at(_take(front_idx, onto_bg)))
        s2, c_mid = s1, c_front
        if sliver is not None:
            rows, first, exit_v = sliver  # rows index `by_edge`, hence `order`
            sliver_rows = _take(by_edge, rows)
            x2, _ = seg.crossing(_take(screen, exit_v[0]), _take(screen, exit_v[1]), sliver_rows)
            s2 = s1.index_copy(0, rows, seg.distance(x2, sliver_rows))
            c_mid = c_front.index_copy(0, rows, face_color_at(first, _take(front_idx, rows)))
        # 1-D box filter over [-1/2, 3/2]: front face to s1, sliver to s2, back surface beyond.
        half = torch.full_like(s1, 0.5)
        lo1, lo2 = torch.minimum(s1, half).unsqueeze(1), torch.minimum(s2, half).unsqueeze(1)
        hi1, hi2 = torch.maximum(s1, half).unsqueeze(1), torch.maximum(s2, half).unsqueeze(1)
        targets += [front_idx, back_idx]
        deltas += [
            (c_mid - c_front) * (lo2 - lo1) + (c_hidden - c_front) * (0.5 - lo2),
            (c_front - c_back) * (hi1 - 0.5) + (c_mid - c_back) * (hi2 - hi1),
        ]
    if not targets:
        return image
    out = flat.index_add(0, row_of(torch.cat(targets)), torch.cat(deltas))
    return out.reshape(image.shape)


#: Colour difference below which two faces count as one surface (a quad's two triangles).
_SAME_COLOUR = 1e-4


def _same_colour_walk(seg, sc, faces, neighbours, front_faces, face, other, rows, front_px, face_color_at):
    """Follow each segment ``rows`` out of its front face, on through drawn faces of the same
    colour (up to :data:`_SLIVER_STEPS` of them), to the first edge across which the colour
    changes. Returns that edge's face and index (-1 where there is none, or where the edge is not
    dominant for the pair direction) and the crossing's distance. No grad."""
    cur = _rows(face, rows)
    px = _rows(front_px, rows)
    oth = _rows(other, rows)
    srows = rows if rows is not None else torch.arange(cur.numel(), device=cur.device)
    base = face_color_at(cur, px)
    out_f = cur.clone()
    out_k = torch.full_like(cur, -1)
    out_s = torch.full(cur.shape, 2.0, dtype=sc.dtype, device=sc.device)
    # The walk goes on only for the segments still inside same-colour faces (`act`, positions in
    # `rows`); each step works on those alone.
    act = torch.arange(cur.numel(), device=cur.device)
    entry = None
    for step in range(_SLIVER_STEPS + 1):
        k, s = _edge_crossings(seg, sc, faces, cur, srows, dominant_only=False, after=entry)
        found = k >= 0
        kk = k.clamp_min(0)
        nxt = _entry(neighbours, cur, kk)
        cont = found & (nxt >= 0) & _take(front_faces, nxt.clamp_min(0)) & (nxt != oth)
        if cont.any():
            cont &= (face_color_at(nxt.clamp_min(0), px) - base).abs().amax(dim=1) <= _SAME_COLOUR
        if step == _SLIVER_STEPS:
            cont = torch.zeros_like(cont)
        stop = found & ~cont
        tri = _take(sc, _take(faces, cur))
        p = tri.gather(1, kk.view(-1, 1, 1).expand(-1, 1, 3)).squeeze(1)
        q = tri.gather(1, ((kk + 1) % 3).view(-1, 1, 1).expand(-1, 1, 3)).squeeze(1)
        hit = torch.nonzero(stop & seg.dominant(p, q)).squeeze(1)
        at = _take(act, hit)
        out_f.index_copy_(0, at, _take(cur, hit))
        out_k.index_copy_(0, at, _take(k, hit))
        out_s.index_copy_(0, at, _take(s, hit))
        go = torch.nonzero(cont).squeeze(1)
        if go.numel() == 0:
            break
        act, cur, entry = _take(act, go), _take(nxt, go), _take(s, go)
        px, base, oth, srows = (_take(t, go) for t in (px, base, oth, srows))
    return out_f, out_k, out_s


def _follow_slivers(seg, sc, faces, neighbours, front_faces, face, other, by_edge, own, ek, ef, s1_est):
    """Pairs whose front-face crossing edge is a crease to drawn faces showing at neither pixel:
    walk through up to :data:`_SLIVER_STEPS` of them to where the segment leaves. Returns the
    rows (into ``by_edge``), the first sliver face, and the exit edge's vertex ids. No grad."""
    nbr = _entry(neighbours, ef, ek)
    rows_all = by_edge
    cand = _take(own, rows_all) & (nbr >= 0)
    cand &= _take(front_faces, nbr.clamp_min(0)) & (nbr != _take(other, rows_all)) & (nbr != _take(face, rows_all))
    idx = torch.nonzero(cand).squeeze(1)
    if idx.numel() == 0:
        return None
    rows = _take(rows_all, idx)
    cur = _take(nbr, idx)
    entry = _take(s1_est, rows)
    other_r, face_r = _take(other, rows), _take(face, rows)
    last_face = torch.full_like(cur, -1)
    last_k = torch.full_like(cur, -1)
    alive = torch.ones_like(cur, dtype=torch.bool)
    for _ in range(_SLIVER_STEPS):
        k_out, s_out = _edge_crossings(seg, sc, faces, cur, rows, dominant_only=False, after=entry)
        step = alive & (k_out >= 0)
        last_face = torch.where(step, cur, last_face)
        last_k = torch.where(step, k_out, last_k)
        entry = torch.where(step, s_out, entry)
        nxt = _entry(neighbours, cur, k_out.clamp_min(0))
        alive = step & (nxt >= 0) & _take(front_faces, nxt.clamp_min(0)) & (nxt != other_r) & (nxt != face_r)
        cur = torch.where(alive, nxt, cur)
        if not alive.any():
            break
    # the segment must leave the slivers through an edge dominant for its direction (bounded
    # derivatives), and within the walk
    keep = (last_k >= 0) & ~alive
    if keep.any():
        tri = _take(sc, _take(faces, last_face.clamp_min(0)))
        kk = last_k.clamp_min(0)
        p = tri.gather(1, kk.view(-1, 1, 1).expand(-1, 1, 3)).squeeze(1)
        q = tri.gather(1, ((kk + 1) % 3).view(-1, 1, 1).expand(-1, 1, 3)).squeeze(1)
        keep &= seg.dominant(p, q)
    keep = torch.nonzero(keep).squeeze(1)
    first = _take(_take(nbr, idx), keep)
    lf, lk = _take(last_face, keep), _take(last_k, keep)
    return _take(idx, keep), first, (_entry(faces, lf, lk), _entry(faces, lf, (lk + 1) % 3))
