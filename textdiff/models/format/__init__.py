"""The saved-folder format, owned here: the files of a model folder and ``textdiff.json``
(:mod:`.layout`, :mod:`.pipeline`), what kind of folder a path holds (:func:`folder_kind`, the one
dispatcher of ``from_pretrained``, ``train.init_from``, the recipe checks and ``convert``), reading
(:mod:`.read`), the one model-folder writer (:mod:`.save`: ``save_pretrained``, ``convert`` and a
run's final save) with its model card and modeling code (:mod:`.card`, :mod:`.remote_code`), and the
rules every folder writer follows so that nothing the user did not name is destroyed (:mod:`.writer`).
"""
from .layout import CARD_FILE, DENOISER_FILE, EXTERNAL, PIPELINE_FILE, PUBLISHED, RECIPE_FILE, TEXTDIFF, folder_kind, model_type
from .pipeline import pipeline, read_pipeline, saved_process
from .read import read_model_folder, read_network
from .save import save_model_folder
from .writer import MARKER, check_target, read_marker, remove_own_temporaries, staged_folder, write_marker

__all__ = ["CARD_FILE", "DENOISER_FILE", "EXTERNAL", "MARKER", "PIPELINE_FILE", "PUBLISHED", "RECIPE_FILE", "TEXTDIFF",
           "check_target", "folder_kind", "model_type", "pipeline", "read_marker", "read_model_folder", "read_network",
           "read_pipeline", "remove_own_temporaries", "save_model_folder", "saved_process", "staged_folder", "write_marker"]
