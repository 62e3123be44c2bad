"""nasforge.export"""
