"""The converter's intermediate representation: a topologically ordered list of nodes.

Blob ids are SSA names: a Caffe top written by several in-place layers gets a new id
per writer (``conv1``, ``conv1#1``, ``conv1#2``...), so every id has exactly one
producer. ``Graph.blob_names`` maps each id back to the Caffe top name.

Example:
    >>> g = Graph(source="net.prototxt")
    >>> g.final_ids()   # Caffe top name -> id of its last writer
    {}
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from kerasq.converters.caffe.proto import caffe_pb2

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.\-]")


def sanitize_name(name: str) -> str:
    """A valid Keras/TF layer name for a Caffe name (``'conv1/3x3'`` -> ``'conv1_3x3'``).

    Example:
        >>> sanitize_name("245"), sanitize_name("conv1/3x3:0"), sanitize_name("")
        ('245', 'conv1_3x3_0', 'layer')
    """
    clean = _NAME_BAD.sub("_", name)
    if not clean:
        return "layer"
    if not re.match(r"[A-Za-z0-9.]", clean[0]):
        clean = "l" + clean
    return clean


@dataclasses.dataclass
class Node:
    """One Caffe layer after normalization."""

    name: str  # unique layer name (duplicates made unique)
    type: str  # canonical V2 type string, e.g. "Convolution"
    bottoms: List[str]  # SSA blob ids
    tops: List[str]  # SSA blob ids
    caffe_tops: List[str]  # top names as written in the prototxt
    param: caffe_pb2.LayerParameter  # hyper-parameters (from the prototxt)
    blobs: List[np.ndarray] = dataclasses.field(default_factory=list)  # float32, Caffe layout
    caffe_name: str = ""  # the layer name as written (may repeat)
    folded: List[str] = dataclasses.field(default_factory=list)  # Caffe layers folded in here

    def __post_init__(self) -> None:
        if not self.caffe_name:
            self.caffe_name = self.name


@dataclasses.dataclass
class Graph:
    """A normalized Caffe net."""

    nodes: List[Node] = dataclasses.field(default_factory=list)  # topological order
    inputs: Dict[str, Tuple[int, ...]] = dataclasses.field(default_factory=dict)  # id -> NCHW
    blob_names: Dict[str, str] = dataclasses.field(default_factory=dict)  # id -> Caffe top name
    source: str = ""  # file named in errors
    name: str = ""  # NetParameter.name
    outputs: List[str] = dataclasses.field(default_factory=list)  # requested output ids
    preprocessing: Optional[dict] = None

    def producers(self) -> Dict[str, Node]:
        """Blob id -> the node writing it."""
        return {top: node for node in self.nodes for top in node.tops}

    def consumers(self) -> Dict[str, List[Node]]:
        """Blob id -> nodes reading it."""
        table: Dict[str, List[Node]] = {}
        for node in self.nodes:
            for bottom in node.bottoms:
                table.setdefault(bottom, []).append(node)
        return table

    def final_ids(self) -> Dict[str, str]:
        """Caffe top name -> SSA id of its last writer (what Caffe reports for that name)."""
        table: Dict[str, str] = {}
        for blob_id in self.inputs:
            table[self.blob_names.get(blob_id, blob_id)] = blob_id
        for node in self.nodes:
            for top in node.tops:
                table[self.blob_names.get(top, top)] = top
        return table

    def output_ids(self) -> List[str]:
        """The requested outputs, else the blob ids no node consumes (Caffe's net outputs)."""
        if self.outputs:
            return list(self.outputs)
        consumed = self.consumers()
        outs = [t for node in self.nodes for t in node.tops if t not in consumed]
        return outs or [t for t in self.inputs if t not in consumed]


__all__ = ["Node", "Graph"]
