"""KTH human actions, as OpenSTL loads it.

Input: the JPEG frame folders `<action>/<personXX_action_dY_uncomp>/image_XXXX.jpg` of the six
actions. Persons 01-16 are the train split, 17-25 the test split (no validation split: OpenSTL
validates on test). Each frame: first channel, bilinear resize to 128x128 (aspect ratio not
kept), /255. Clips of L = T + T' frames (kth20: 10 -> 20, kth40: 10 -> 40) are found by
OpenSTL's rule: scan the frames from the last one backwards; when frame i and frame i - L + 1
lie in the same folder and their frame numbers differ by exactly L - 1, record a clip starting
at i - L + 1 and step back L - 1 frames (boxing, handclapping, handwaving, walking:
non-overlapping clips) or 2 frames (jogging, running: a clip every 3 frames); then step back 1.

Stored once per frame (uint8 (128, 128, 1); only frames that some clip uses), with the clip
starts in the dataset metadata, so overlapping jogging/running clips share their frames.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import ClassVar

import numpy as np

from tau_jax.data import base, sources, tfds_base

NAME = "kth"
ACTIONS = ("boxing", "handclapping", "handwaving", "walking", "jogging", "running")
DENSE_ACTIONS = ("jogging", "running")  # clips every 3 frames
TRAIN_PERSONS = range(1, 17)
TEST_PERSONS = range(17, 26)
SIZE = 128
IN_FRAMES = 10
VARIANTS = {"kth20": 20, "kth40": 40}
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
MANUAL_SUBDIRS = ("kth", "kth_action", "KTH")

MANUAL_DOWNLOAD_INSTRUCTIONS = """
KTH needs the pre-extracted JPEG frames: folders
<action>/<personXX_<action>_dY_uncomp>/image_XXXX.jpg for the actions boxing, handclapping,
handwaving, walking, jogging and running. Get `kth_action.zip` from the OpenSTL project's
GitHub release v0.1.0 (its KTH dataset asset, also linked from OpenSTL's docs on preparing
data), unzip it, and point config.data.manual_dir (`--manual_dir`) at the folder that holds
the six action folders, or at a folder with it as `kth/` (default
<data_dir>/downloads/manual). The original videos are on the KTH action recognition page of
the Royal Institute of Technology (Schuldt, Laptev and Caputo, ICPR 2004); extracting their
frames to this layout gives the same input.
"""


@dataclasses.dataclass
class FrameList:
    paths: list[pathlib.Path]
    folders: list[str]
    numbers: list[int]
    actions: list[str]


def clip_starts(folders: list[str], numbers: list[int], actions: list[str],
                length: int) -> list[int]:
    """OpenSTL's KTH clip rule (see the module doc); returns the starts in ascending order."""
    starts = []
    i = len(folders) - 1
    while i >= length - 1:
        j = i - length + 1
        if folders[i] == folders[j] and numbers[i] - numbers[j] == length - 1:
            starts.append(j)
            i -= 2 if actions[i] in DENSE_ACTIONS else length - 1
        i -= 1
    return sorted(starts)


def find_root(manual_dir: pathlib.Path) -> pathlib.Path:
    found = base.first_existing(manual_dir, MANUAL_SUBDIRS,
                                lambda p: any((p / a).is_dir() for a in ACTIONS))
    if found is None:
        raise FileNotFoundError(
            f"KTH action folders ({', '.join(ACTIONS)}) not found in {manual_dir} (nor in its "
            f"kth/ folder). {MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    return found


def list_frames(root: pathlib.Path, persons) -> FrameList:
    """Frames of the given persons in OpenSTL's order: action, folder, frame file."""
    persons = set(persons)
    out = FrameList([], [], [], [])
    for action in ACTIONS:
        adir = root / action
        if not adir.is_dir():
            continue
        for folder in sorted((p for p in adir.iterdir() if p.is_dir()), key=base.natural_key):
            m = re.fullmatch(r"person(\d\d)_.*", folder.name)
            if m is None:
                raise ValueError(f"KTH folder {folder} is not named personXX_<action>_dY_uncomp.")
            if int(folder.name[6:8]) not in persons:
                continue
            files = sorted((f for f in folder.iterdir()
                            if f.suffix.lower() in FRAME_SUFFIXES and not f.name.startswith(".")),
                           key=lambda f: f.name)
            for f in files:
                try:
                    number = int(f.name[6:10])
                except ValueError:
                    raise ValueError(f"KTH frame {f} is not named image_XXXX.jpg.") from None
                out.paths.append(f)
                out.folders.append(f"{action}/{folder.name}")
                out.numbers.append(number)
                out.actions.append(action)
    return out


def plan_split(root: pathlib.Path, persons, length: int, split: str):
    """(frame paths to store, clip starts as positions in that list)."""
    frames = list_frames(root, persons)
    if not frames.paths:
        raise FileNotFoundError(f"No KTH frames for the {split} persons "
                                f"{min(persons):02d}-{max(persons):02d} under {root}.")
    starts = clip_starts(frames.folders, frames.numbers, frames.actions, length)
    if not starts:
        raise ValueError(f"No KTH folder under {root} has {length} consecutive frames for the "
                         f"{split} split (T + T' = {length}).")
    used = np.zeros(len(frames.paths), bool)
    for s in starts:
        used[s:s + length] = True
    position = np.cumsum(used) - 1  # index of each kept frame in the stored list
    kept = [p for p, u in zip(frames.paths, used) if u]
    return kept, [int(position[s]) for s in starts]


def read_frame(path: pathlib.Path) -> np.ndarray:
    """uint8 (128, 128, 1): first channel, bilinear resize."""
    image = base.read_image(path)
    if image.dtype != np.uint8:
        raise ValueError(f"KTH frame {path} is not an 8-bit image.")
    return base.resize_bilinear(image[:, :, :1], (SIZE, SIZE))


class Kth(tfds_base.Builder, skip_registration=True):
    """KTH frames uint8 (128, 128, 1) with OpenSTL's clip starts in the metadata."""

    name = "tau_kth"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        tfds_base.VERSION: "OpenSTL's KTH loader: person split, clip rule."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def feature_spec(self):
        return (SIZE, SIZE, 1), np.uint8

    def _split_generators(self, dl_manager):
        root = find_root(pathlib.Path(dl_manager.manual_dir))
        out_frames = self.params["out_frames"]
        plans = {"train": plan_split(root, TRAIN_PERSONS, IN_FRAMES + out_frames, "train"),
                 "test": plan_split(root, TEST_PERSONS, IN_FRAMES + out_frames, "test")}
        self.info.metadata.update({
            "in_frames": IN_FRAMES, "out_frames": out_frames,
            "starts": {s: starts for s, (_, starts) in plans.items()},
            "frames": {s: len(paths) for s, (paths, _) in plans.items()}})
        return {s: self._generate_examples(map(read_frame, paths), len(paths))
                for s, (paths, _) in plans.items()}


def variant(data_config) -> str:
    name = str(data_config.name)
    out = int(data_config.out_frames or 0)
    if name in VARIANTS:
        if out and out != VARIANTS[name]:
            raise ValueError(f"config.data.name={name!r} predicts {VARIANTS[name]} frames but "
                             f"config.data.out_frames={out}.")
        key = name
    else:
        key = {0: "kth20", 20: "kth20", 40: "kth40"}.get(out)
        if key is None:
            raise ValueError(f"KTH has 10 -> 20 (kth20) and 10 -> 40 (kth40) variants; "
                             f"config.data.out_frames={out} is neither.")
    base.frames_of(data_config, IN_FRAMES, VARIANTS[key], key, fixed=True)
    return key


def builder(data_config) -> Kth:
    key = variant(data_config)
    return Kth.for_variant(data_config, key, {"out_frames": VARIANTS[key]})


def prepare(data_config) -> Kth:
    b = builder(data_config)
    if not b.is_prepared():
        tfds_base.ensure_prepared(b, find_root(base.manual_dir_of(data_config)))
    return b


def get_source(data_config, split: str) -> sources.Source:
    base.check_split(NAME, split, ("train", "test"), "OpenSTL validates KTH on 'test'.")
    b = prepare(data_config)
    md = tfds_base.metadata(b)
    return sources.RecordSource(tfds_base.open_split(b, split), name=b.builder_config.name,
                                split=split, in_frames=md["in_frames"],
                                out_frames=md["out_frames"], channels=1, sub=0.0, div=255.0,
                                starts=md["starts"][split])


def conventions(data_config) -> base.Conventions:
    """OpenSTL's KTH metrics but LPIPS (it needs pretrained AlexNet weights): MSE and MAE summed
    over a frame's pixels, SSIM, PSNR."""
    del data_config
    return base.VIDEO
