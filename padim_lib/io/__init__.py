"""Files: atomic writes (io.atomic) and the one model-file layout every detector is saved in (io.modelfile).

The lowest layer above `errors`: it imports nothing else of padim_lib.
"""
