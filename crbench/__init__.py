"""crbench: benchmark and evaluation harness for cloud removal on SEN12MS-CR-TS.

Reproduces "Cloud Removal in Remote Sensing Using Sequential-Based Diffusion Models"
(Zhao & Jia, Remote Sensing 2023, 15, 2861, doi:10.3390/rs15112861). See DESIGN.md in the
shared folder for the fixed conventions (layout, scaling, masks, sampler, result schema).
"""

__version__ = "0.1.0"
