"""The subcommands, one module each, in pipeline order: read them in this order to read the pipeline.

Each module has NAME (the subcommand, or a (group, action) pair), HELP, DESCRIPTION,
`add_arguments(parser)` and `run(args)`. They are the only code that writes run
directories, images, JSON and tables; the stage packages they call compute.
"""

from jaxprobe.commands import (
  collect,
  dataset_info,
  dataset_merge,
  demo,
  evaluate_agent,
  explain,
  fidelity,
  fit_prior,
  goggles,
  probe,
  train_agent,
  train_generator,
  write_report,
)

PIPELINE = (
  train_agent,  # agents: train, or bring your own checkpoint
  evaluate_agent,  # agents: score whole games
  explain,  # saliency: what the agent looks at
  collect,  # collection: record its states
  dataset_info,  # collection: inspect them
  dataset_merge,  # collection: join the seeds
  train_generator,  # generator: learn to draw them
  goggles,  # generator: does the agent still play through it?
  fidelity,  # generator: what survives, state by state
  fit_prior,  # generator: where its states lie in latent space
  probe,  # search: states of interest
  write_report,  # evaluation and report
  demo,  # all of it on the bundled assets
)
