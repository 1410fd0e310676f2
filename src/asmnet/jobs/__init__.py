"""The batch jobs, a layer above the library (which imports nothing from here).

* :mod:`.predict`: ``asmnet predict`` (images, folders, videos, webcams -> records + annotated copies)
* :mod:`.align`: ``asmnet align`` (aligned face crops + a JSON Lines index)
* :mod:`.units`: the unit of work each job runs per image, the same on every engine
* :mod:`.inputs`: what the inputs are (folders expanded, videos apart) and where outputs go
* :mod:`.record_sink`: the JSON Lines output, and what ``--resume`` reads back from it
* :mod:`.local_engine` / :mod:`.ray_engine`: the runners of units of work, in this machine's
  processes or on the actors of a Ray cluster; they run what they are given and import no job
"""
