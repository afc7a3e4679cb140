"""Analytic anti-aliasing along triangle edges: the pass that gives positions their gradients.

After the hard z-buffer, a pixel's colour does not depend continuously on where a triangle's
edge lies, so geometry would get no gradient. Following the deferred approach of nvdiffrast
(Laine et al. 2020), for every pair of neighbouring pixels showing different faces, the edge of
the *front* face that crosses the segment between the two pixel centres is located analytically
(from the projected vertices, with gradients), and the pixel on the far side of the crossing is
blended by the fraction of its box filter the front face covers:

* crossing at distance ``s`` from the front pixel's centre, ``s > 1/2``: the neighbour gains
  ``(s − 1/2)·(c_front − c_back)``;
* ``s < 1/2``: the front pixel loses ``(1/2 − s)·(c_front − c_back)``.

The result is continuous in the edge position (both sides give the average at ``s = 1/2``) and
its derivative is the box-filtered image's. An edge is used only by pixel pairs across its
dominant direction (a mostly vertical edge by horizontal pairs, and vice versa); using both
directions would count its motion twice. Crease edges between faces of one mesh are treated the
same way, so flat-shaded facets also move smoothly.
"""

from __future__ import annotations

import torch


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
    fa, fb = fmap[ia], fmap[ib]
    da, db = depth[ia], depth[ib]
    a_front = (fa >= 0) & ((fb < 0) | (da <= db))
    b_front = (fb >= 0) & ~a_front
    keep = a_front | b_front
    nz, ia, ib, a_front = nz[keep], ia[keep], ib[keep], a_front[keep]
    face = torch.where(a_front, fa[keep], fb[keep])
    return nz, ia, ib, a_front, face


def _edge_crossings(screen, faces, face, start, fixed, ax, cx, horizontal):
    """First edge of ``face`` crossing each pair's segment in its dominant direction: the
    edge's index ``k`` (-1 for none) and the face. No grad."""
    valid = face >= 0
    tri = screen[faces[face.clamp_min(0)]]  # (K, 3, 3)
    chosen = torch.full_like(face, -1)
    for k in range(3):
        p, q = tri[:, k], tri[:, (k + 1) % 3]
        d_ax, d_cx = q[:, ax] - p[:, ax], q[:, cx] - p[:, cx]
        dominant = d_cx.abs() >= d_ax.abs() if horizontal else d_cx.abs() > d_ax.abs()
        spans = (p[:, cx] - fixed) * (q[:, cx] - fixed) <= 0
        safe = torch.where(d_cx == 0, torch.ones_like(d_cx), d_cx)
        cross = p[:, ax] + (fixed - p[:, cx]) * d_ax / safe
        ok = valid & dominant & spans & (d_cx != 0) & (cross >= start) & (cross <= start + 1)
        chosen = torch.where((chosen < 0) & ok, torch.full_like(chosen, k), chosen)
    return chosen, face


def _plane_crossing(planes, f1, f2, start, fixed, horizontal):
    """Where the inverse-depth planes of faces ``f1`` and ``f2`` meet along each pair's axis
    (their intersection line, seen in the image); NaN-free, out of range where parallel or
    not dominant in this direction."""
    d = planes[f1] - planes[f2]
    along, across = (d[:, 0], d[:, 1]) if horizontal else (d[:, 1], d[:, 0])
    dominant = along.abs() >= across.abs() if horizontal else along.abs() > across.abs()
    ok = dominant & (along.abs() > 1e-12)
    safe = torch.where(ok, along, torch.ones_like(along))
    cross = -(across * fixed + d[:, 2]) / safe
    return torch.where(ok, cross, start - 1.0)


def antialias(
    image: torch.Tensor,
    face_map: torch.Tensor,
    depth: torch.Tensor,
    screen: torch.Tensor,
    faces: torch.Tensor,
    planes: torch.Tensor,
    background_at=None,
) -> torch.Tensor:
    """Anti-alias a rendered batch.

    Args:
        image: ``(B, H, W, 3)`` composited image (differentiable).
        face_map: ``(B, H, W)`` visible face per pixel, -1 for background.
        depth: ``(B, H, W)`` z-depth (only used to order pairs; not differentiated).
        screen: ``(Vt, 3)`` projected vertices ``(u, v, z)`` (differentiable).
        faces: ``(Ft, 3)`` vertex indices.
        planes: ``(Ft, 3)`` inverse-depth planes (:func:`~sae.render.raster.depth_planes`).
        background_at: optional callable, flat pixel indices ``(K,)`` → the final background
            colour ``(K, 3)`` at those pixels (what an object hides there).

    Returns:
        ``(B, H, W, 3)`` the anti-aliased image.
    """
    flat = image.reshape(-1, 3)
    depth_flat = depth.detach().reshape(-1)
    fmap = face_map.reshape(-1)
    targets, deltas = [], []
    for horizontal in (True, False):
        with torch.no_grad():
            nz, ia, ib, a_front, face = _pairs(face_map, depth_flat, horizontal)
            if face.numel() == 0:
                continue
            # Along the pair's axis `ax` (u for horizontal pairs) at fixed cross coordinate `cx`;
            # `start` is the first pixel's centre on that axis.
            ax, cx = (0, 1) if horizontal else (1, 0)
            start = nz[:, 2 if horizontal else 1].to(screen.dtype)
            fixed = nz[:, 1 if horizontal else 2].to(screen.dtype)
            other = torch.where(a_front, fmap[ib], fmap[ia])
            sc = screen.detach()
            # 1) an edge of the front face; 2) where the two faces' planes meet (intersecting
            # parts: a wheel entering the body); 3) an edge of the other face (it ends there).
            edge_k, edge_face = _edge_crossings(sc, faces, face, start, fixed, ax, cx, horizontal)
            todo = (edge_k < 0) & (other >= 0)
            plane_ok = torch.zeros_like(todo)
            if todo.any():
                cross = _plane_crossing(planes.detach(), face, other.clamp_min(0), start, fixed, horizontal)
                plane_ok = todo & (cross >= start) & (cross <= start + 1)
            todo = (edge_k < 0) & ~plane_ok & (other >= 0)
            if todo.any():
                k2, _ = _edge_crossings(sc, faces, other.clamp_min(0), start, fixed, ax, cx, horizontal)
                use = todo & (k2 >= 0)
                edge_k = torch.where(use, k2, edge_k)
                edge_face = torch.where(use, other, edge_face)
            by_edge = torch.nonzero(edge_k >= 0).squeeze(1)
            by_plane = torch.nonzero(plane_ok).squeeze(1)
            vi = faces[edge_face[by_edge], edge_k[by_edge]]
            vj = faces[edge_face[by_edge], (edge_k[by_edge] + 1) % 3]
            order = torch.cat([by_edge, by_plane])
            if order.numel() == 0:
                continue
        # Differentiable crossing positions along the pair's axis.
        p, q = screen[vi], screen[vj]
        sel_e = by_edge
        cross_e = p[:, ax] + (fixed[sel_e] - p[:, cx]) * (q[:, ax] - p[:, ax]) / (q[:, cx] - p[:, cx])
        cross_p = _plane_crossing(planes, face[by_plane], other[by_plane], start[by_plane], fixed[by_plane], horizontal)
        cross = torch.cat([cross_e, cross_p])
        a_front, ia, ib, st = a_front[order], ia[order], ib[order], start[order]
        s = torch.where(a_front, cross - st, st + 1 - cross)
        front_idx = torch.where(a_front, ia, ib)
        back_idx = torch.where(a_front, ib, ia)
        c_front, c_back = flat[front_idx], flat[back_idx]
        if background_at is not None:
            # Where the front pixel loses coverage to the background, what shows there is the
            # background *at that pixel* (known), not the neighbour's colour: using it keeps the
            # image continuous as an edge sweeps over textured background.
            with torch.no_grad():
                uncover = torch.nonzero((fmap[back_idx] < 0) & (s.detach() < 0.5)).squeeze(1)
            if uncover.numel():
                c_back = c_back.index_copy(0, uncover, background_at(front_idx[uncover]))
        # s > 1/2: the back pixel gains (s - 1/2)(c_front - c_back); s < 1/2: the front pixel
        # loses (1/2 - s)(c_front - c_back). Both are (s - 1/2)(c_front - c_back).
        targets.append(torch.where(s >= 0.5, back_idx, front_idx))
        deltas.append((s - 0.5).unsqueeze(1) * (c_front - c_back))
    if not targets:
        return image
    out = flat.index_add(0, torch.cat(targets), torch.cat(deltas))
    return out.reshape(image.shape)
