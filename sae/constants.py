"""Names and sizes that the command line needs before it imports anything heavy (torch)."""

#: Virtual KITTI 2 / KITTI frame size, ``(height, width)``.
FULL_SIZE = (375, 1242)
#: The default working resolution of the workflow's CPU scale, ``(height, width)``.
WORKING_SIZE = (188, 621)
#: The detectors ``sae train`` builds (``sae.detectors.train.DETECTORS`` holds their classes).
DETECTOR_NAMES = ("squeezedet", "yolov3")
