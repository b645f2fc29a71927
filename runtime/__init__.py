"""The lightweight runtime: egocentric video Q&A from a bundle, on ONNX Runtime or TensorRT.

Never imports torch, transformers or optimum (a test proves it). Heavy or optional modules
(PyAV, onnxruntime, tensorrt, pycuda, OpenCV) are imported where they are used.

    from exo2ego_edge.runtime import Runtime
    rt = Runtime.load("bundle/")
    print(rt.ask("clip.mp4", "What am I doing?").text)
    with_clip = rt.session("clip.mp4")            # several questions, one vision pass
    for token in rt.stream("clip.mp4", "What is in my hand?"):
        print(token.text, end="", flush=True)
"""

from exo2ego_edge.runtime.errors import BackendError, BundleError, PromptError, SourceError, VideoError
from exo2ego_edge.runtime.generate import GREEDY, Sampling
from exo2ego_edge.runtime.session import Answer, AnswerStream, Runtime, Session, Timings, Token
from exo2ego_edge.runtime.video import decode_clip, decode_clips

__all__ = [
    "GREEDY", "Answer", "AnswerStream", "BackendError", "BundleError", "PromptError", "Runtime",
    "Sampling", "Session", "SourceError", "Timings", "Token", "VideoError", "decode_clip", "decode_clips",
]
