"""The Slicer module's backend: what the module file (``AttentionMambaSeg.py``) runs, outside its four classes.

- :mod:`.child_process`: the package's CLI in a child process, watched through JSON lines (prediction never
  runs in a thread of the Slicer process);
- :mod:`.jobs`: a child process polled by a Qt timer on the main thread, and the jobs that write its results
  into the scene (segmentation, cine, model import and download);
- :mod:`.install`: the one install step (PyTorch through the PyTorch extension, the other packages with pip,
  Slicer's own packages pinned) and its platform rules;
- :mod:`.models`: where the module keeps models, how they are listed and described in the panel, and
  whether a registry model can be downloaded from here;
- :mod:`.logic`: the Logic's model, run and cine methods (the module's Logic adds Slicer settings);
- :mod:`.panel`: model management in the panel (import, download, removal, licences, first install);
- :mod:`.startup`: what the module registers when Slicer starts (terminology, sample data);
- :mod:`.self_test`: the bodies of the module's ``ScriptedLoadableModuleTest``.

Everything here runs in the Slicer process and imports only what Slicer ships (the standard library, numpy,
SimpleITK, VTK, Qt and ``slicer``, the last two where they are needed): torch is loaded only by the child.
"""


def tr(text: str) -> str:
    """``text`` translated in the module's context (``slicer.i18n``); as it is where Slicer's i18n is absent."""
    try:
        from slicer.i18n import translate
    except ImportError:  # headless (slicer-core) or outside Slicer
        return text
    return translate("AttentionMambaSeg", text)
