"""The study's detector: AnimeFace 2009 (nvxs 1.0.2, as bundled by the PyPI package
``animeface==2.0.3``). Its Python extension ``animeface._nvxs`` reads Pillow's private ``Imaging``
struct and silently finds *no faces* with Pillow >= 12, so the bundled C library ``libnvxs`` is
called directly with :mod:`ctypes`, doing exactly what the extension's C code did (same
pre-processing, same detector parameters: step 4, scale factor 1.095, smallest window 42.592 px).
The ``animeface`` package itself is never imported; only its library file is used.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import threading

import numpy as np

from .base import Face

__all__ = ["AnimeFaceDetector"]

# ---- AnimeFace 2009 through ctypes ----------------------------------------------------------

class _NvMatrix(ctypes.Structure):
    # nv_matrix_t of nvxs 1.0.2 (nv_core.h)
    _fields_ = [
        ("list", ctypes.c_int),
        ("list_step", ctypes.c_uint),
        ("n", ctypes.c_int),
        ("m", ctypes.c_int),
        ("rows", ctypes.c_int),
        ("cols", ctypes.c_int),
        ("step", ctypes.c_int),
        ("alias", ctypes.c_int),
        ("v", ctypes.POINTER(ctypes.c_float)),
    ]


class _NvRect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int)]


class _NvFacePosition(ctypes.Structure):
    _fields_ = [
        ("likelihood", ctypes.c_float),
        ("face", _NvRect),
        ("left_eye", _NvRect),
        ("right_eye", _NvRect),
        ("nose", _NvRect),
        ("mouth", _NvRect),
        ("chin", _NvRect),
    ]


_MatPtr = ctypes.POINTER(_NvMatrix)
_NV_MAX_FACE = 4096  # as the original extension
_NV_CH_B, _NV_CH_G, _NV_CH_R = 0, 1, 2


def _find_libnvxs() -> str:
    """Path of the C library bundled by the ``animeface`` wheel (without importing the package)."""
    try:
        spec = importlib.util.find_spec("animeface")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise RuntimeError("the AnimeFace detector needs the package animeface==2.0.3 (pip install animeface==2.0.3)")
    site = os.path.dirname(os.path.dirname(spec.origin))
    found = sorted(glob.glob(os.path.join(site, "animeface.libs", "libnvxs*.so*")))
    if not found:
        raise RuntimeError(f"libnvxs not found in {os.path.join(site, 'animeface.libs')} "
                           "(the animeface wheel for Linux x86-64 bundles it)")
    return found[0]


class AnimeFaceDetector:
    """AnimeFace 2009 (nvxs 1.0.2) through ``libnvxs``, with the original wrapper's parameters.

    The C library is loaded when the detector is built. Calls are serialised with a lock: the
    library contains f2c-translated LAPACK code with static state and is not known to be
    re-entrant (the GIL is released during a call, so other Python threads still run).
    """

    name = "animeface"
    min_face = 43  # smallest search window: 42.592 px
    default_threshold = 0.7  # the study's
    step = 4.0
    scale_factor = 1.095
    min_window = 42.592

    def __init__(self, library: str | None = None):
        self.library = library or _find_libnvxs()
        lib = ctypes.CDLL(self.library)
        lib.nv_matrix3d_alloc.restype = _MatPtr
        lib.nv_matrix3d_alloc.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.nv_matrix_zero.restype = None
        lib.nv_matrix_zero.argtypes = [_MatPtr]
        lib.nv_matrix_free.restype = None
        lib.nv_matrix_free.argtypes = [ctypes.POINTER(_MatPtr)]
        lib.nv_gray.restype = None
        lib.nv_gray.argtypes = [_MatPtr, _MatPtr]
        lib.nv_gaussian5x5.restype = None
        lib.nv_gaussian5x5.argtypes = [_MatPtr, ctypes.c_int, _MatPtr, ctypes.c_int]
        lib.nv_laplacian1.restype = None
        lib.nv_laplacian1.argtypes = [_MatPtr, _MatPtr, ctypes.c_float]
        lib.nv_integral.restype = None
        lib.nv_integral.argtypes = [_MatPtr, _MatPtr, ctypes.c_int]
        lib.nv_face_detect.restype = ctypes.c_int
        lib.nv_face_detect.argtypes = [
            ctypes.POINTER(_NvFacePosition), ctypes.c_int,          # faces, maxface
            _MatPtr, _MatPtr,                                       # gray_integral, edge_integral
            ctypes.POINTER(_NvRect),                                # image_size
            ctypes.c_void_p, ctypes.c_void_p,                       # dir_mlp, detector_mlp
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,          # bagging_mlp (NULL-ended), count
            ctypes.c_void_p,                                        # parts_mlp
            ctypes.c_float, ctypes.c_float, ctypes.c_float,         # step, scale_factor, min_window
        ]
        self._lib = lib

        def addr(sym: str) -> int:
            return ctypes.addressof(ctypes.c_char.in_dll(lib, sym))

        self._mlp_dir = addr("nv_face_mlp_dir")
        self._mlp_face = addr("nv_face_mlp_face_00")
        self._mlp_parts = addr("nv_face_mlp_parts")
        self._mlp_bagging = (ctypes.c_void_p * 3)(addr("nv_face_mlp_face_01"), addr("nv_face_mlp_face_02"), None)
        self._faces = (_NvFacePosition * _NV_MAX_FACE)()  # the results, reused under the lock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AnimeFaceDetector(library={self.library!r})"

    def _alloc(self, n: int, rows: int, cols: int, live: list) -> _MatPtr:
        m = self._lib.nv_matrix3d_alloc(n, rows, cols)
        if not m or not m.contents.v:
            raise MemoryError(f"nvxs could not allocate a {n}x{rows}x{cols} matrix")
        live.append(m)
        self._lib.nv_matrix_zero(m)
        return m

    @staticmethod
    def _view(m: _MatPtr) -> np.ndarray:
        c = m.contents
        return np.ctypeslib.as_array(c.v, shape=(c.rows * c.cols, c.step))

    def detect_array(self, rgb: np.ndarray) -> list[Face]:
        """Every face the library reports in ``rgb`` (``(H, W, 3)`` uint8), unsorted, no threshold."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect_array wants an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        if min(h, w) < self.min_face:  # no search window fits; also keeps tiny arrays out of C
            return []
        with self._lock:
            return self._run(np.ascontiguousarray(rgb), h, w)

    def _run(self, rgb: np.ndarray, h: int, w: int) -> list[Face]:
        lib = self._lib
        live: list = []
        try:
            bgr = self._alloc(3, h, w, live)
            gray = self._alloc(1, h, w, live)
            v = self._view(bgr)
            pix = rgb.reshape(h * w, 3)
            v[:, _NV_CH_R] = pix[:, 0]
            v[:, _NV_CH_G] = pix[:, 1]
            v[:, _NV_CH_B] = pix[:, 2]
            lib.nv_gray(gray, bgr)
            smooth = self._alloc(1, h, w, live)
            edge = self._alloc(1, h, w, live)
            gray_integral = self._alloc(1, h + 1, w + 1, live)
            edge_integral = self._alloc(1, h + 1, w + 1, live)
            lib.nv_gaussian5x5(smooth, 0, gray, 0)
            lib.nv_laplacian1(edge, smooth, 4.0)
            lib.nv_integral(gray_integral, gray, 0)
            lib.nv_integral(edge_integral, edge, 0)
            image_size = _NvRect(0, 0, w, h)
            n = lib.nv_face_detect(
                self._faces, _NV_MAX_FACE, gray_integral, edge_integral, ctypes.byref(image_size),
                self._mlp_dir, self._mlp_face, self._mlp_bagging, 2, self._mlp_parts,
                self.step, self.scale_factor, self.min_window)
            faces = []
            for p in self._faces[:max(0, min(int(n), _NV_MAX_FACE))]:
                r = p.face
                faces.append(Face((r.x, r.y, r.x + r.width, r.y + r.height), float(p.likelihood)))
            return faces
        finally:
            for m in live:
                lib.nv_matrix_free(ctypes.byref(m))


