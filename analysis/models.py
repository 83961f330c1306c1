"""Speech encoders behind one interface: every layer's hidden states with their valid lengths.

:class:`SpeechEncoder` wraps a transformers WavLM, HuBERT, wav2vec 2.0 or Whisper model and returns
``hidden (L+1, B, T, H)`` plus ``valid_frames (B,)``. Layer 0 is the output before the first
transformer layer, 1..L the transformer layers, exactly Hugging Face's ``hidden_states``. For
Whisper the last entry includes the encoder's final LayerNorm (transformers does the same).

Front ends
----------
* wav2vec 2.0 / HuBERT / WavLM take the raw waveform. ``do_normalize`` (zero mean, unit variance per
  utterance, computed on the real samples only) follows the checkpoint's feature-extractor config
  when one is found next to the model, else ``Wav2Vec2FeatureExtractor``'s default (True); it is
  recorded in the store settings.
* Padding: models whose first conv is followed by **group norm** (``feat_extract_norm="group"``:
  wav2vec 2.0 base, HuBERT base, WavLM base / base plus) normalise each channel over the whole
  input, padding included, so zero padding changes every frame; transformers does not mask it.
  For those, :meth:`SpeechEncoder.forward` never pads: it runs each distinct length as its own
  sub-batch (equal lengths still share one). Layer-norm models (the large checkpoints) are padded
  and given an ``attention_mask``; their valid frames do not depend on the padding.
* Whisper takes a log-mel spectrogram (transformers' ``WhisperFeatureExtractor`` with the model's
  ``num_mel_bins``). ``whisper_mode="crop"`` (default, the model as trained): the input is padded to
  30 s, the encoder runs on all 1500 frames, the output is cropped to the real length.
  ``whisper_mode="trim"``: the mel spectrogram of the real length only is encoded, with the
  positional embeddings sliced to that length; much faster on short utterances but the features
  differ (attention no longer sees the padding, and the log-mel floor ``max - 8`` is taken over the
  real audio only). Trimmed inputs are never padded (equal lengths share a sub-batch).
* Whisper inputs longer than one window (30 s) run as overlapping windows stitched on the frame
  grid (:meth:`SpeechEncoder.whisper_long`, :func:`analysis.frames.plan_windows`): 5 s overlap, each
  frame from the window where it has the most context. Every window is an ordinary Whisper input
  (padded to 30 s in ``crop`` mode), so the frames are those of the model as trained, with at least
  2.5 s of context on each side instead of the whole recording.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .defaults import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_WHISPER_MODE, DTYPES, WHISPER_MODES, check_device
from .errors import ModelError
from .frames import FrameSpec, frame_spec_for
from .model_identity import ModelIdentity, files_digest, module_digest

SAMPLE_RATE = 16000
_DTYPES = {name: getattr(torch, name) for name in DTYPES}
#: Encoder frames (20 ms) two neighbouring windows of a long Whisper input share: 250 = 5 s, so every
#: kept frame has at least 2.5 s of context on both sides, at 20 % more computation.
WHISPER_OVERLAP = 250


def resolve_device(device: str = DEFAULT_DEVICE) -> torch.device:
    """The torch device for a device name (:func:`analysis.defaults.check_device`), checked present.

    ``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` or ``cuda:N`` (an error naming
    the fix when no such CUDA device is visible). Feature extraction and training both use it.
    """
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ModelError(f"device {device} was asked for but no such CUDA device is visible "
                             f"({torch.cuda.device_count()} visible)",
                             hint="use device auto or cpu (--device, or features.device / train.device in a "
                             "run config)")
    return torch.device(device)


@dataclass(frozen=True)
class PortableModule:
    """A transformers module as its class, configuration and weights (CPU tensors), to pickle.

    Ray sends built models to its workers by pickle, and torch refuses to pickle a module with
    parametrizations (WavLM's weight-normed positional convolution) whole.
    """

    cls: type
    config: object
    state: dict

    @classmethod
    def of(cls, module: torch.nn.Module) -> PortableModule | None:
        """The portable form of ``module``; None when it has no ``config`` to rebuild it from."""
        config = getattr(module, "config", None)
        if config is None:
            return None
        return cls(type(module), config, {k: v.detach().cpu() for k, v in module.state_dict().items()})

    def build(self) -> torch.nn.Module:
        """The module again: built from the configuration, then given the weights (strictly)."""
        module = self.cls(self.config)
        module.load_state_dict(self.state, strict=True)
        return module


@dataclass
class _Frontend:
    do_normalize: bool
    source: str  # where the setting came from


def _read_preprocessor(path: Path | None) -> dict | None:
    if path is None:
        return None
    f = Path(path) / "preprocessor_config.json"
    if f.is_file():
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
    return None


class SpeechEncoder:
    """One speech model, run for its hidden states.

    Attributes
    ----------
    n_layers : int
        Transformer layers L; :meth:`forward` returns L + 1 hidden states.
    hidden_size : int
    frame_spec : FrameSpec
    model_type : str
        ``wav2vec2``, ``hubert``, ``wavlm`` or ``whisper``.
    pads_safely : bool
        False when zero padding would change the features (group-norm conv, Whisper trim mode);
        :meth:`forward` then runs each distinct length separately.
    """

    def __init__(self, model: torch.nn.Module, *, model_id: str, revision: str | None = None,
                 device: str = DEFAULT_DEVICE, dtype: str = DEFAULT_DTYPE, whisper_mode: str = DEFAULT_WHISPER_MODE,
                 do_normalize: bool | None = None, preprocessor: dict | None = None,
                 weights_dir: str | Path | None = None, missing_keys: Sequence[str] = (),
                 unexpected_keys: Sequence[str] = ()) -> None:
        if dtype not in _DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}", hint=f"use one of {', '.join(_DTYPES)}")
        if whisper_mode not in WHISPER_MODES:
            raise ModelError(f"unknown Whisper mode {whisper_mode!r}", hint=f"use {' or '.join(WHISPER_MODES)}")
        self.device = resolve_device(device)
        if dtype == "float16" and self.device.type != "cuda":
            raise ModelError("dtype float16 is only offered on CUDA (float16 matrix products are slow or missing "
                             "on CPUs)", hint="use --dtype float32, or bfloat16 on CPUs with bfloat16 units")
        self.dtype_name = dtype
        self.dtype = _DTYPES[dtype]
        self.model_id = model_id
        self.revision = revision
        # what identifies the weights (see analysis.model_identity): the files they were loaded
        # from, else the module's tensors as given (before any dtype or device change)
        self._weights_dir = None if weights_dir is None else Path(weights_dir)
        self._missing_keys, self._unexpected_keys = tuple(missing_keys), tuple(unexpected_keys)
        self._identity: ModelIdentity | None = None
        self._tensor_digest = None if self._weights_dir is not None else module_digest(model)
        self.whisper_mode = whisper_mode
        # transformers configs and modules have their attributes by architecture: typed Any here,
        # checked by the branches below (a model without them is refused with a ModelError)
        config: Any = model.config
        self.model_type = getattr(config, "model_type", "")
        self.model: Any
        self.frontend: _Frontend | None
        if self.model_type == "whisper":
            encoder: Any = model
            if hasattr(encoder, "get_encoder"):
                encoder = encoder.get_encoder()
            elif hasattr(encoder, "model") and hasattr(encoder.model, "encoder"):
                encoder = encoder.model.encoder
            if not hasattr(encoder, "embed_positions") or not hasattr(encoder, "conv2"):
                raise ModelError(f"cannot find the Whisper encoder in {type(model).__name__}")
            self.model = encoder
            self.n_layers = int(config.encoder_layers)
            self.hidden_size = int(config.d_model)
            from transformers import WhisperFeatureExtractor

            self._mel = WhisperFeatureExtractor(feature_size=int(config.num_mel_bins), sampling_rate=SAMPLE_RATE)
            self.frontend = None
            self.pads_safely = whisper_mode == "crop"  # every crop input is padded to 30 s anyway
        elif self.model_type in ("wav2vec2", "hubert", "wavlm", "wav2vec2-conformer", "data2vec-audio"):
            base = getattr(model, "base_model", model)
            self.model = base
            self.n_layers = int(config.num_hidden_layers)
            self.hidden_size = int(config.hidden_size)
            if do_normalize is None and preprocessor is not None and "do_normalize" in preprocessor:
                self.frontend = _Frontend(bool(preprocessor["do_normalize"]), "preprocessor_config.json")
            elif do_normalize is None:
                self.frontend = _Frontend(True, "Wav2Vec2FeatureExtractor default")
            else:
                self.frontend = _Frontend(bool(do_normalize), "caller")
            self.pads_safely = getattr(config, "feat_extract_norm", "group") == "layer"
        else:
            raise ModelError(f"model type {self.model_type!r} is not a speech encoder this toolkit runs",
                             hint="use a WavLM, HuBERT, wav2vec 2.0 or Whisper checkpoint")
        self.frame_spec: FrameSpec = frame_spec_for(config)
        # weights stay float32: float16/bfloat16 run as autocast (see _precision)
        self.model.eval().to(device=self.device)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        """The encoder's state for pickling (a Ray run sends a built encoder to its workers).

        The module travels as its class, configuration and weights (on CPU): modules with
        parametrizations (WavLM's weight-normed positional convolution) cannot be pickled whole.
        """
        state = dict(self.__dict__)
        state["model"] = PortableModule.of(state["model"]) or state["model"]
        return state

    def __setstate__(self, state: dict) -> None:
        """Rebuild the module of :meth:`__getstate__` (same weights, on the encoder's device, eval mode)."""
        if isinstance(state.get("model"), PortableModule):
            state = {**state, "model": state["model"].build().eval().to(device=state["device"])}
        self.__dict__.update(state)

    # ------------------------------------------------------------------ facts
    @property
    def identity(self) -> ModelIdentity:
        """The model's identity by content (:mod:`analysis.model_identity`), computed once."""
        if self._identity is None:
            if self._weights_dir is not None:
                digest, files = files_digest(self._weights_dir)
                self._identity = ModelIdentity(digest, "files", self.revision, files, self._missing_keys,
                                               self._unexpected_keys)
            else:
                self._identity = ModelIdentity(str(self._tensor_digest), "tensors", self.revision, (),
                                               self._missing_keys, self._unexpected_keys)
        return self._identity

    @property
    def max_samples(self) -> int | None:
        """Longest input the model takes, samples; None when unlimited (every model here: Whisper
        inputs longer than its window run as stitched windows, :meth:`whisper_long`)."""
        return None

    @property
    def window_samples(self) -> int | None:
        """Samples of one Whisper window (30 s); None for models without a window."""
        frames = self.frame_spec.max_frames
        if self.model_type == "whisper" and frames is not None:
            return int(frames * 2 * self.frame_spec.hop_length)
        return None

    @property
    def min_samples(self) -> int:
        """Shortest input that yields one frame, samples."""
        if self.model_type == "whisper":
            return self.frame_spec.n_fft  # the centred STFT's reflect padding needs > n_fft / 2
        return int(round(self.frame_spec.receptive_field * self.frame_spec.sample_rate))

    def settings(self) -> dict:
        """Every setting that changes the numbers (recorded in the feature store)."""
        out = {"dtype": self.dtype_name, "sample_rate": SAMPLE_RATE, "model_type": self.model_type}
        if self.model_type == "whisper":
            out["whisper_mode"] = self.whisper_mode
        elif self.frontend is not None:
            out["do_normalize"] = self.frontend.do_normalize
        return out

    def valid_frames(self, lengths) -> np.ndarray:
        """Frames of real audio for inputs of ``lengths`` samples, int64 ``(B,)``."""
        return np.asarray(self.frame_spec.n_frames(np.asarray(lengths, np.int64)), np.int64).reshape(-1)

    # ------------------------------------------------------------------ running
    def forward(self, waves, lengths=None, *, grad: bool = False) -> tuple[torch.Tensor, np.ndarray]:
        """Hidden states of every layer.

        Parameters
        ----------
        waves : sequence of ndarray (n_samples_b,), or array / Tensor (B, n_max)
            Mono audio at 16 kHz, float32: one array per utterance (any lengths), or a padded batch.
        lengths : array of int, shape (B,), optional
            Real lengths (samples) of a padded batch; ignored for a sequence of arrays.
        grad : bool
            Keep the autograd graph (fine-tuning); by default the model runs under
            ``torch.inference_mode()``.

        Returns
        -------
        hidden : torch.Tensor, float32, shape (L + 1, B, T, H), on the model's device
            ``T`` is the most valid frames in the batch; frames past ``valid_frames[b]`` are zero.
        valid_frames : ndarray of int64, shape (B,)
        """
        if isinstance(waves, torch.Tensor):
            waves = waves.detach().cpu().numpy()
        if isinstance(waves, np.ndarray) and waves.ndim == 2:
            n = np.full(len(waves), waves.shape[1]) if lengths is None else np.asarray(lengths, np.int64)
            waves = [waves[b, : int(n[b])] for b in range(len(waves))]
        lengths = np.array([len(w) for w in waves], np.int64)
        if lengths.size == 0:
            raise ModelError("forward() was given no audio")
        if lengths.min() < self.min_samples:
            raise ModelError(f"an input of {lengths.min()} samples is shorter than one frame "
                             f"({self.min_samples} samples)", hint="drop utterances this short")
        valid = self.valid_frames(lengths)
        window = self.window_samples
        long = np.flatnonzero(lengths > window) if window is not None else np.zeros(0, np.int64)
        rest = np.setdiff1d(np.arange(len(waves)), long)
        if self.pads_safely or np.all(lengths[rest] == lengths[rest][0] if rest.size else True):
            groups = [rest] if rest.size else []
        else:
            groups = [rest[lengths[rest] == n] for n in np.unique(lengths[rest])]
        t_max = int(valid.max())
        out = torch.zeros((self.n_layers + 1, len(waves), t_max, self.hidden_size), dtype=torch.float32,
                          device=self.device)
        with (contextlib.nullcontext() if grad else torch.inference_mode()):
            for b in long:  # longer than one Whisper window: overlapping windows stitched on the frame grid
                hs = self.whisper_long(np.asarray(waves[b], np.float32))
                out[:, b, : int(valid[b])] = hs[:, : int(valid[b])].float()
            for idx in groups:
                hs = self._run([waves[i] for i in idx], lengths[idx])
                for j, b in enumerate(idx):
                    t = int(valid[b])
                    out[:, b, :t] = hs[:, j, :t].float()
        return out, valid

    __call__ = forward

    def _precision(self) -> contextlib.AbstractContextManager:
        """Autocast to ``dtype`` (float16/bfloat16), or nothing for float32.

        Autocast rather than casting the weights: matrix products and convolutions run in half
        precision (the speed), while normalisations, softmax and the residual stream stay float32
        (large speech models have activations beyond float16's range in places, and layer norms of
        half-precision sums lose digits).
        """
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _run(self, waves: Sequence[np.ndarray], lengths: np.ndarray) -> torch.Tensor:
        """Run one padded batch; (L+1, b, T', H) float32."""
        if self.model_type == "whisper":
            return self._run_whisper(waves, lengths)
        wav = [np.asarray(w, np.float32) for w in waves]
        if self.frontend is not None and self.frontend.do_normalize:
            # per utterance, over real samples only (as Wav2Vec2FeatureExtractor does with a mask)
            wav = [(w - w.mean()) / np.sqrt(w.var() + 1e-7) for w in wav]
        n_max = int(lengths.max())
        batch = np.zeros((len(wav), n_max), np.float32)
        mask = np.zeros((len(wav), n_max), np.int64)
        for i, w in enumerate(wav):  # one copy per utterance, not per frame
            batch[i, : len(w)] = w
            mask[i, : len(w)] = 1
        x = torch.from_numpy(batch).to(self.device)
        kwargs = {}
        if self.pads_safely and np.any(lengths != n_max):
            kwargs["attention_mask"] = torch.from_numpy(mask).to(self.device)
        with self._precision():
            res = self.model(x, output_hidden_states=True, **kwargs)
        # under autocast the hidden states come out in mixed dtypes
        return torch.stack([h.float() for h in res.hidden_states], dim=0)

    def _run_whisper(self, waves: Sequence[np.ndarray], lengths: np.ndarray) -> torch.Tensor:
        trim = self.whisper_mode == "trim"
        feats = self._mel([np.asarray(w, np.float32) for w in waves], sampling_rate=SAMPLE_RATE,
                          return_tensors="pt", padding="longest" if trim else "max_length",
                          truncation=not trim)  # trim: the whole input, as long as the model's window
        mel = feats.input_features.to(self.device)
        with self._precision():
            return self.whisper_hidden_states(mel)

    def whisper_long(self, wave: np.ndarray) -> torch.Tensor:
        """Hidden states of a Whisper input longer than one window, ``(L + 1, T, H)``.

        The log-mel spectrogram is computed once over the whole input (so its ``max - 8`` floor and
        scaling are the recording's, not each window's); windows of ``max_source_positions`` encoder
        frames overlapping by :data:`WHISPER_OVERLAP` frames (:func:`analysis.frames.plan_windows`)
        run through the encoder as ordinary inputs (``crop``: each padded to 30 s as in training;
        ``trim``: the last window only as long as it is), and each frame is kept from the window in
        which it lies furthest from an edge. ``T = ceil(n_mel / 2)``: the frames of a single pass.
        """
        from .frames import plan_windows

        spec = self.frame_spec
        hop = spec.hop_length
        n_frames = int(spec.n_frames(len(wave)))
        window = int(spec.max_frames or 0)  # Whisper specs always have one
        plan = plan_windows(n_frames, window=window, overlap=WHISPER_OVERLAP)
        win_mel = 2 * window
        n_mel = len(wave) // hop
        if self.whisper_mode == "crop":
            # zero audio after the end, as the feature extractor pads an input to 30 s: the last
            # window sees the padding a single 30 s input would
            need = (plan[-1].start * 2 + win_mel) * hop
            wave = np.concatenate([wave, np.zeros(max(need - len(wave), 0), np.float32)])
        mel = self._mel([wave], sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="longest",
                        truncation=False).input_features.to(self.device)
        parts = []
        for w in plan:
            a = 2 * w.start
            b = a + win_mel if self.whisper_mode == "crop" else min(a + win_mel, n_mel)
            with self._precision():  # weights stay float32; half precision is autocast
                hs = self.whisper_hidden_states(mel[:, :, a:b])
            parts.append(hs[:, 0, w.keep_from - w.start:w.keep_to - w.start])
        return torch.cat(parts, dim=1)

    def whisper_hidden_states(self, mel: torch.Tensor) -> torch.Tensor:
        """The Whisper encoder on a log-mel batch of any length up to 3000 mel frames.

        Same computation as ``WhisperEncoder.forward`` (which insists on 3000 frames) with the
        positional embeddings sliced to the encoder length; equal to it at full length (tested).

        Parameters
        ----------
        mel : torch.Tensor, shape (B, n_mels, n_mel_frames)

        Returns
        -------
        torch.Tensor, float32, shape (L + 1, B, ceil(n_mel_frames / 2), H)
        """
        enc = self.model
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        if x.shape[1] > enc.embed_positions.num_embeddings:
            raise ModelError(f"{x.shape[1]} encoder frames exceed Whisper's {enc.embed_positions.num_embeddings}",
                             hint="Whisper takes at most 30 s of audio; split longer utterances")
        h = x + enc.embed_positions.weight[: x.shape[1]]
        states = [h]
        for layer in enc.layers:
            h = layer(h, None)
            states.append(h)
        states[-1] = enc.layer_norm(states[-1])
        return torch.stack([h.float() for h in states], dim=0)


def _model_dir(name_or_path: str) -> Path | None:
    p = Path(name_or_path)
    return p if p.is_dir() else None


def load_encoder(model, *, device: str = DEFAULT_DEVICE, dtype: str = DEFAULT_DTYPE,
                 whisper_mode: str = DEFAULT_WHISPER_MODE,
                 do_normalize: bool | None = None, model_id: str | None = None,
                 allow_missing: bool = False) -> SpeechEncoder:
    """A :class:`SpeechEncoder` from a model id / path, or from an already built model.

    Parameters
    ----------
    model : str, Path or transformers.PreTrainedModel
        Hub id, local directory, CTranslate2 Whisper directory or ``whisper-base`` (resolved by
        :func:`analysis.model_sources.load_pretrained`), or a model object.
    device : ``auto`` | ``cpu`` | ``cuda``
    dtype : ``float32`` | ``float16`` | ``bfloat16``
        Compute precision: float32, or autocast to float16 (CUDA only) or bfloat16 (CUDA, and CPUs
        with bfloat16 units); the weights stay float32 and the hidden states come out float32.
    whisper_mode : ``crop`` | ``trim``
    do_normalize : bool, optional
        Override the waveform normalisation of wav2vec-style models.
    model_id : str, optional
        Name recorded in the store (defaults to ``model`` or the model's ``name_or_path``).
    allow_missing : bool
        Accept weight files that do not fill the architecture (see
        :func:`analysis.model_sources.resolve_pretrained`); the missing weights are recorded in
        :attr:`SpeechEncoder.identity`.
    """
    preprocessor = None
    revision = None
    weights_dir = None
    built: Any
    missing: list[str] = []
    unexpected: list[str] = []
    if isinstance(model, (str, Path)):
        from .model_sources import resolve_pretrained

        loaded = resolve_pretrained(str(model), allow_missing=allow_missing)
        built, revision = loaded.model, loaded.revision
        preprocessor = _read_preprocessor(_model_dir(str(loaded.location)))
        model_id = model_id or loaded.model_id
        weights_dir = _model_dir(str(loaded.location))
        missing, unexpected = loaded.missing_keys, loaded.unexpected_keys
    else:
        built = model
        model_id = model_id or getattr(built.config, "_name_or_path", "") or type(built).__name__
    revision = revision or getattr(built.config, "_commit_hash", None)
    return SpeechEncoder(built, model_id=model_id, revision=revision, device=device, dtype=dtype,
                         whisper_mode=whisper_mode, do_normalize=do_normalize, preprocessor=preprocessor,
                         weights_dir=weights_dir, missing_keys=missing, unexpected_keys=unexpected)

