"""City profiles: CRS, centre, regional-unit kind, source formats and the POI category vocabulary.

A profile says *what kind of data* a synthetic city imitates (Shenzhen: 250 m grid, mobile-signaling
OD, Amap POIs, third-national-land-survey codes; London: bike-dock Voronoi regions, TfL cycle-hire
journeys, OS PointX POIs, UKMap land use); the scale says *how much*.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np

from landuse.constants import CRS_LONDON, CRS_SHENZHEN, LANDUSE_CLASSES, PROFILES

RegionKind = Literal["grid", "voronoi"]
TripKind = Literal["signaling_od", "journeys"]

# Non-construction surface kinds the latent map distinguishes; each picks codes of its own.
COVER_KINDS: tuple[str, ...] = ("river", "lake", "farmland", "forest", "bare")


@dataclass(frozen=True)
class PoiCategory:
    """One leaf POI category.

    Attributes:
        code: the source's leaf code (Amap 6-digit typecode, PointX 8-digit class code).
        levels: category names from the top of the hierarchy down (3 levels).
        affinity: relative frequency of this category among POIs in a cell of each land-use class,
            keyed by class name (absent classes: 0).
        stems: name stems a POI of this category is named after.
        chain: True when stems are brand names (named "brand(branch)" / "brand" rather than "place stem").
    """

    code: str
    levels: tuple[str, str, str]
    affinity: dict[str, float]
    stems: tuple[str, ...]
    chain: bool = False

    def affinity_vector(self) -> np.ndarray:
        """Affinity as a float vector in ``LANDUSE_CLASSES`` order."""
        return np.array([self.affinity.get(c, 0.0) for c in LANDUSE_CLASSES], dtype=np.float64)


@dataclass(frozen=True)
class ProfileSpec:
    """Everything profile-specific the generator needs.

    Attributes:
        name: profile name (one of ``landuse.constants.PROFILES``).
        crs: projected CRS of every geometry written (metres).
        centre_lon, centre_lat: WGS84 centre of the study extent.
        region_kind: ``grid`` (square cells, id column ``grid_id``) or ``voronoi`` (cells around docks).
        region_id_column: id column of ``regions/regions.gpkg``.
        trip_kind: ``signaling_od`` (hourly OD counts) or ``journeys`` (one row per bike journey).
        start_date: first day (a Monday) of the simulated week.
        classmap_file: file name of the code table under the class-map directory.
        landuse_code_column / landuse_name_column / landuse_id_column: columns of the land-use layer
            (name column ``None`` when the source carries only codes).
        cover_codes: for each non-construction surface kind, the codes its polygons may carry.
        poi_categories: the POI vocabulary.
        places: place names used to name POIs / stations.
        commute_decay_m, leisure_decay_m, background_decay_m: distance-decay lengths of the gravity model.
        self_trip_weight: weight of the zero-distance (same region) destination per trip purpose
            family ``(commute, leisure, background)``: signaling zones see intra-zone moves, bike
            commuters never return a bike where they took it.
        coast: whether the extent has a sea edge (a bay along the southern border).
    """

    name: str
    crs: str
    centre_lon: float
    centre_lat: float
    region_kind: RegionKind
    region_id_column: str
    trip_kind: TripKind
    start_date: date
    classmap_file: str
    landuse_code_column: str
    landuse_name_column: str | None
    landuse_id_column: str
    cover_codes: dict[str, tuple[str, ...]]
    poi_categories: tuple[PoiCategory, ...]
    places: tuple[str, ...]
    commute_decay_m: float
    leisure_decay_m: float
    background_decay_m: float
    self_trip_weight: tuple[float, float, float]
    coast: bool


def _amap(code: str, big: str, mid: str, small: str, affinity: dict[str, float], stems: tuple[str, ...],
          chain: bool = False) -> PoiCategory:
    return PoiCategory(code, (big, mid, small), affinity, stems, chain)


# Amap POI vocabulary: real big categories (大类) with a few mid/small categories each.
AMAP_CATEGORIES: tuple[PoiCategory, ...] = (
    _amap("050100", "餐饮服务", "中餐厅", "中餐厅", {"commercial": 10, "residential": 2.5, "industrial": 1,
          "public_service": 0.4, "green_space": 1.2, "transport": 0.3}, ("酒家", "粤菜馆", "湘菜馆", "家常菜", "海鲜酒楼", "潮汕牛肉火锅")),
    _amap("050102", "餐饮服务", "中餐厅", "四川菜(川菜)", {"commercial": 4, "residential": 1.5, "industrial": 0.5},
          ("川菜馆", "麻辣香锅", "串串香", "重庆小面")),
    _amap("050300", "餐饮服务", "快餐厅", "快餐厅", {"commercial": 6, "residential": 3, "industrial": 2,
          "transport": 0.5}, ("快餐", "猪脚饭", "肠粉店", "沙县小吃", "隆江猪脚饭")),
    _amap("050302", "餐饮服务", "快餐厅", "麦当劳", {"commercial": 2, "residential": 0.3, "transport": 0.3,
          "green_space": 0.3}, ("麦当劳",), chain=True),
    _amap("050500", "餐饮服务", "咖啡厅", "咖啡厅", {"commercial": 4, "residential": 0.5, "green_space": 0.8},
          ("星巴克", "瑞幸咖啡", "Manner Coffee"), chain=True),
    _amap("050700", "餐饮服务", "冷饮店", "冷饮店", {"commercial": 3, "residential": 0.8, "green_space": 0.6},
          ("喜茶", "奈雪的茶", "蜜雪冰城"), chain=True),
    _amap("060101", "购物服务", "商场", "购物中心", {"commercial": 2.5}, ("购物中心", "万象城", "天虹商场", "COCO Park")),
    _amap("060200", "购物服务", "便民商店/便利店", "便民商店/便利店", {"commercial": 5, "residential": 5,
          "industrial": 1.5, "transport": 0.5, "green_space": 0.4}, ("美宜佳", "7-Eleven", "天虹微喔", "罗森"), chain=True),
    _amap("060400", "购物服务", "超级市场", "超市", {"commercial": 2, "residential": 1.5}, ("沃尔玛", "华润万家", "钱大妈"), chain=True),
    _amap("061000", "购物服务", "个人用品/化妆品店", "个人用品/化妆品店", {"commercial": 4, "residential": 0.5},
          ("屈臣氏", "化妆品店", "名创优品")),
    _amap("060700", "购物服务", "家电电子卖场", "家电电子卖场", {"commercial": 3, "industrial": 0.5},
          ("数码城", "电子市场", "手机配件")),
    _amap("071100", "生活服务", "美容美发店", "美容美发店", {"commercial": 4, "residential": 4}, ("发型设计", "美甲店", "美容院")),
    _amap("070500", "生活服务", "物流速递", "物流速递", {"commercial": 1, "residential": 1, "industrial": 3},
          ("顺丰速运", "菜鸟驿站", "京东快递")),
    _amap("071000", "生活服务", "洗衣店", "洗衣店", {"commercial": 1, "residential": 2}, ("干洗店", "洗衣店")),
    _amap("070600", "生活服务", "电力营业厅", "电力营业厅", {"utilities": 3, "commercial": 0.3}, ("供电营业厅",)),
    _amap("080111", "体育休闲服务", "运动场馆", "健身中心", {"commercial": 3, "residential": 1.5, "green_space": 1},
          ("健身中心", "瑜伽馆", "游泳馆")),
    _amap("080601", "体育休闲服务", "影剧院", "电影院", {"commercial": 2}, ("电影院", "国际影城")),
    _amap("080300", "体育休闲服务", "娱乐场所", "KTV", {"commercial": 2.5, "residential": 0.3}, ("KTV", "量贩式KTV")),
    _amap("080100", "体育休闲服务", "运动场馆", "体育馆", {"public_service": 1.5, "green_space": 2.5},
          ("体育馆", "体育中心", "足球场", "篮球场")),
    _amap("090101", "医疗保健服务", "综合医院", "三级甲等医院", {"public_service": 3}, ("人民医院", "中医院", "医院")),
    _amap("090300", "医疗保健服务", "诊所", "诊所", {"commercial": 1.5, "residential": 1.5, "public_service": 2.5},
          ("社区健康服务中心", "诊所", "口腔门诊")),
    _amap("090601", "医疗保健服务", "医药保健销售店", "药房", {"commercial": 3, "residential": 2},
          ("大参林", "海王星辰", "老百姓大药房"), chain=True),
    _amap("100100", "住宿服务", "宾馆酒店", "宾馆酒店", {"commercial": 4, "transport": 0.8}, ("大酒店", "酒店", "公寓酒店")),
    _amap("100105", "住宿服务", "宾馆酒店", "经济型连锁酒店", {"commercial": 2.5, "industrial": 0.5, "transport": 0.5},
          ("7天酒店", "如家酒店", "汉庭酒店", "维也纳酒店"), chain=True),
    _amap("110101", "风景名胜", "公园广场", "公园", {"green_space": 8, "non_construction": 0.5}, ("公园", "社区公园", "郊野公园")),
    _amap("110105", "风景名胜", "公园广场", "城市广场", {"green_space": 2.5, "commercial": 0.5}, ("广场", "文化广场")),
    _amap("110200", "风景名胜", "风景名胜", "风景名胜", {"green_space": 2, "non_construction": 1.5}, ("观景台", "古村落", "山顶")),
    _amap("120201", "商务住宅", "楼宇", "商务写字楼", {"commercial": 8, "industrial": 0.5}, ("大厦", "国际中心", "金融中心")),
    _amap("120302", "商务住宅", "住宅区", "住宅小区", {"residential": 6, "commercial": 0.5}, ("花园", "小区", "新村", "公寓")),
    _amap("120100", "商务住宅", "产业园区", "产业园区", {"industrial": 6, "commercial": 0.5}, ("科技园", "工业园", "产业园")),
    _amap("130100", "政府机构及社会团体", "政府机关", "区县级政府及事业单位", {"public_service": 4, "commercial": 0.2},
          ("街道办事处", "区政府", "社区工作站")),
    _amap("130501", "政府机构及社会团体", "公检法机构", "公安警察", {"public_service": 2, "transport": 0.2}, ("派出所", "交警大队")),
    _amap("141203", "科教文化服务", "学校", "小学", {"public_service": 5, "residential": 0.3}, ("小学", "实验小学")),
    _amap("141202", "科教文化服务", "学校", "中学", {"public_service": 4}, ("中学", "外国语学校")),
    _amap("141204", "科教文化服务", "学校", "幼儿园", {"public_service": 2.5, "residential": 1.5}, ("幼儿园", "实验幼儿园")),
    _amap("141201", "科教文化服务", "学校", "高等院校", {"public_service": 1.5}, ("大学", "职业技术学院")),
    _amap("140500", "科教文化服务", "图书馆", "图书馆", {"public_service": 1.5, "green_space": 0.3}, ("图书馆",)),
    _amap("141400", "科教文化服务", "培训机构", "培训机构", {"commercial": 3, "residential": 1}, ("培训中心", "教育", "琴行")),
    _amap("150500", "交通设施服务", "地铁站", "地铁站", {"transport": 3, "commercial": 0.5}, ("地铁站",)),
    _amap("150700", "交通设施服务", "公交车站", "公交车站", {"transport": 10, "residential": 0.4, "commercial": 0.3},
          ("公交站", "路口", "总站")),
    _amap("150900", "交通设施服务", "停车场", "停车场", {"transport": 3, "commercial": 1, "residential": 1, "industrial": 0.5},
          ("停车场", "地下停车场")),
    _amap("160100", "金融保险服务", "银行", "银行", {"commercial": 5, "residential": 0.3},
          ("中国银行", "招商银行", "工商银行", "平安银行"), chain=True),
    _amap("160300", "金融保险服务", "自动提款机", "自动提款机", {"commercial": 2.5, "residential": 1, "transport": 0.3},
          ("ATM",)),
    _amap("160400", "金融保险服务", "保险公司", "保险公司", {"commercial": 2}, ("保险", "人寿保险")),
    _amap("170200", "公司企业", "公司", "公司", {"commercial": 4, "industrial": 3}, ("科技有限公司", "贸易有限公司", "实业有限公司")),
    _amap("170300", "公司企业", "工厂", "工厂", {"industrial": 10, "utilities": 0.5}, ("电子厂", "五金厂", "制衣厂", "塑胶厂")),
    _amap("170100", "公司企业", "知名企业", "知名企业", {"commercial": 1, "industrial": 2}, ("集团", "控股")),
    _amap("170208", "公司企业", "公司", "水务公司", {"utilities": 3}, ("水务", "水质净化厂")),
    _amap("200300", "公共设施", "公共厕所", "公共厕所", {"green_space": 3, "transport": 1, "residential": 0.3,
          "commercial": 0.3, "non_construction": 0.2}, ("公共厕所",)),
    _amap("200100", "公共设施", "报刊亭", "报刊亭", {"commercial": 0.6, "transport": 0.3}, ("报刊亭",)),
    _amap("200400", "公共设施", "紧急避难场所", "紧急避难场所", {"green_space": 1, "public_service": 0.5, "utilities": 0.5},
          ("应急避难场所",)),
)


def _px(code: str, group: str, category: str, klass: str, affinity: dict[str, float], stems: tuple[str, ...],
        chain: bool = False) -> PoiCategory:
    return PoiCategory(code, (group, category, klass), affinity, stems, chain)


_AED = "Accommodation, eating and drinking"
_COM = "Commercial services"
_ATT = "Attractions"
_SPO = "Sport and entertainment"
_EDU = "Education and health"
_PUB = "Public infrastructure"
_MAN = "Manufacturing and production"
_RET = "Retail"
_TRA = "Transport"

# OS PointX vocabulary: pointx_class = group(2) + category(2) + class(4).
POINTX_CATEGORIES: tuple[PoiCategory, ...] = (
    _px("01010059", _AED, "Accommodation", "Hotels, motels, country houses and inns",
        {"commercial": 4, "transport": 0.5},
        ("Hotel", "Premier Inn", "Travelodge", "Guest House")),
    _px("01020013", _AED, "Eating and drinking", "Cafes, snack bars and tea rooms", {"commercial": 8, "residential": 2,
        "green_space": 1.5, "transport": 0.3}, ("Pret A Manger", "Costa Coffee", "Caffe Nero", "Starbucks"),
        chain=True),
    _px("01020018", _AED, "Eating and drinking", "Fast food and takeaway outlets", {"commercial": 5, "residential": 3,
        "industrial": 0.5}, ("Fried Chicken", "Kebab House", "Fish Bar", "Pizza")),
    _px("01020034", _AED, "Eating and drinking", "Pubs, bars and inns",
        {"commercial": 6, "residential": 2, "green_space": 0.3},
        ("The Red Lion", "The Crown", "The King's Head", "The George", "The White Hart", "The Queen's Arms"),
        chain=True),
    _px("01020043", _AED, "Eating and drinking", "Restaurants", {"commercial": 9, "residential": 1, "green_space": 0.5},
        ("Kitchen", "Trattoria", "Brasserie", "Curry House", "Noodle Bar", "Grill")),
    _px("02070131", _COM, "Legal and financial", "Banks and building societies", {"commercial": 4},
        ("Barclays", "HSBC", "NatWest", "Lloyds Bank", "Santander"), chain=True),
    _px("02070150", _COM, "Legal and financial", "Solicitors, barristers and legal services", {"commercial": 3},
        ("Solicitors", "Chambers", "Legal Services")),
    _px("02080155", _COM, "Personal, consumer and other services", "Hair and beauty services",
        {"commercial": 4, "residential": 3}, ("Hair Studio", "Barbers", "Beauty Salon", "Nails")),
    _px("02060100", _COM, "IT, advertising, marketing and media services", "Advertising and marketing",
        {"commercial": 4, "industrial": 0.5}, ("Media", "Creative Agency", "Digital")),
    _px("02130203", _COM, "Business and industrial services", "Industrial equipment and services",
        {"industrial": 4, "commercial": 0.3}, ("Engineering Services", "Plant Hire", "Fabrications")),
    _px("02150245", _COM, "Transport, storage and delivery", "Warehousing and distribution",
        {"industrial": 5, "transport": 0.5}, ("Distribution Centre", "Logistics", "Self Storage")),
    _px("02090171", _COM, "Property and development services", "Estate agents", {"commercial": 2, "residential": 1},
        ("Estates", "Lettings", "Property Services")),
    _px("03040275", _ATT, "Recreational", "Parks",
        {"green_space": 7, "non_construction": 0.5}, ("Park", "Gardens", "Common")),
    _px("03040274", _ATT, "Recreational", "Playgrounds",
        {"green_space": 3, "residential": 0.5}, ("Playground", "Play Area")),
    _px("03030270", _ATT, "Historical and cultural", "Museums and art galleries", {"commercial": 1, "public_service": 1,
        "green_space": 0.5}, ("Museum", "Gallery", "Arts Centre")),
    _px("04220278", _SPO, "Sports complex", "Gymnasiums, sports halls and leisure centres",
        {"commercial": 2, "residential": 1, "green_space": 1.5}, ("Leisure Centre", "Gym", "Fitness")),
    _px("04250308", _SPO, "Venues, stage and screen", "Cinemas",
        {"commercial": 2}, ("Odeon", "Vue", "Picturehouse"), chain=True),
    _px("04220303", _SPO, "Sports complex", "Playing fields and sports grounds",
        {"green_space": 4, "public_service": 0.5},
        ("Playing Fields", "Sports Ground", "Cricket Club", "Football Club")),
    _px("05280364", _EDU, "Primary, secondary and tertiary education", "Primary schools",
        {"public_service": 5, "residential": 0.3},
        ("Primary School", "Infant School", "C of E Primary School")),
    _px("05280365", _EDU, "Primary, secondary and tertiary education", "Secondary schools", {"public_service": 4},
        ("Academy", "High School", "School")),
    _px("05280369", _EDU, "Primary, secondary and tertiary education", "Universities", {"public_service": 1.5},
        ("University", "College")),
    _px("05290800", _EDU, "Health practitioners and establishments", "Hospitals", {"public_service": 3}, ("Hospital",)),
    _px("05290801", _EDU, "Health practitioners and establishments", "GPs and medical practices",
        {"public_service": 2, "residential": 1, "commercial": 0.5}, ("Medical Centre", "Surgery", "Health Centre")),
    _px("05290804", _EDU, "Health practitioners and establishments", "Dental surgeries",
        {"public_service": 1, "residential": 1, "commercial": 1}, ("Dental Practice", "Dental Surgery")),
    _px("05300372", _EDU, "Health support services", "Pharmacies", {"commercial": 2, "residential": 1.5},
        ("Boots", "Superdrug", "Lloydspharmacy", "Pharmacy"), chain=True),
    _px("06320455", _PUB, "Central and local government", "Local government offices", {"public_service": 3},
        ("Town Hall", "Council Offices", "Civic Centre")),
    _px("06330439", _PUB, "Emergency services", "Police stations", {"public_service": 2}, ("Police Station",)),
    _px("06330438", _PUB, "Emergency services", "Fire brigade stations", {"public_service": 1}, ("Fire Station",)),
    _px("06340458", _PUB, "Infrastructure and facilities", "Electrical features", {"utilities": 5, "industrial": 0.3},
        ("Substation", "Electricity Sub Station")),
    _px("06340463", _PUB, "Infrastructure and facilities", "Water pumping stations",
        {"utilities": 2}, ("Pumping Station",)),
    _px("06340459", _PUB, "Infrastructure and facilities", "Public toilets", {"green_space": 2, "commercial": 0.5,
        "transport": 1}, ("Public Toilets",)),
    _px("06340461", _PUB, "Infrastructure and facilities", "Libraries",
        {"public_service": 2, "commercial": 0.2}, ("Library",)),
    _px("06350467", _PUB, "Organisations", "Places of worship", {"public_service": 3, "residential": 0.8},
        ("St Mary's Church", "Mosque", "Methodist Church", "Synagogue", "Baptist Church")),
    _px("07370475", _MAN, "Industrial features", "Factories", {"industrial": 8, "utilities": 0.3},
        ("Works", "Manufacturing", "Print Works")),
    _px("07380481", _MAN, "Foodstuffs", "Food processing and production",
        {"industrial": 3}, ("Bakery", "Foods", "Brewery")),
    _px("07370478", _MAN, "Industrial features", "Waste and recycling", {"utilities": 3, "industrial": 1},
        ("Recycling Centre", "Waste Transfer Station")),
    _px("09460661", _RET, "Clothing and accessories", "Clothing and fashion", {"commercial": 6},
        ("Fashion", "Boutique", "Clothing")),
    _px("09470819", _RET, "Food, drink and multi item retail", "Convenience stores and independent supermarkets",
        {"commercial": 4, "residential": 4, "transport": 0.3}, ("Tesco Express", "Sainsbury's Local", "Co-op", "Londis",
        "Costcutter"), chain=True),
    _px("09470820", _RET, "Food, drink and multi item retail", "Supermarket chains",
        {"commercial": 2, "residential": 1.5},
        ("Tesco", "Sainsbury's", "Waitrose", "Lidl", "Aldi"), chain=True),
    _px("09480700", _RET, "Household, office, leisure and garden", "DIY and home improvement",
        {"commercial": 1.5, "industrial": 1}, ("Hardware", "Timber Merchants", "Homebase"), chain=True),
    _px("09490725", _RET, "Motoring", "Petrol and fuel stations", {"transport": 2, "commercial": 0.5, "industrial": 1},
        ("BP", "Shell", "Esso", "Texaco"), chain=True),
    _px("10570738", _TRA, "Bus transport", "Bus stops", {"transport": 10, "residential": 0.4, "commercial": 0.3},
        ("Bus Stop",)),
    _px("10590732", _TRA, "Road and rail", "Railway stations, junctions and halts", {"transport": 2, "commercial": 0.3},
        ("Station", "Underground Station")),
    _px("10590760", _TRA, "Road and rail", "Car parks", {"transport": 3, "commercial": 1, "residential": 0.5},
        ("Car Park", "Multi-Storey Car Park")),
    _px("10590759", _TRA, "Road and rail", "Taxi ranks", {"transport": 1, "commercial": 0.5}, ("Taxi Rank",)),
)

SHENZHEN_PLACES: tuple[str, ...] = (
    "福田", "南山", "罗湖", "华强北", "车公庙", "科技园", "蛇口", "宝安", "龙华", "梅林", "香蜜湖", "景田", "莲花",
    "上沙", "下沙", "岗厦", "东门", "八卦岭", "园岭", "皇岗", "福华", "益田", "海岸城", "后海", "西丽", "大冲",
    "白石洲", "竹子林", "石厦", "新洲", "彩田", "笋岗", "黄贝岭", "水贝", "深南", "滨海", "侨城", "沙河", "布吉", "民治",
)

LONDON_PLACES: tuple[str, ...] = (
    "Camden", "Islington", "Hackney", "Shoreditch", "Soho", "Holborn", "Southwark", "Lambeth", "Bermondsey",
    "Clerkenwell", "Marylebone", "Paddington", "Kensington", "Chelsea", "Pimlico", "Victoria", "Waterloo",
    "Bloomsbury", "Covent Garden", "Mayfair", "Fitzrovia", "Whitechapel", "Stepney", "Bow", "Borough", "Vauxhall",
    "Kennington", "Battersea", "Fulham", "Hammersmith", "Notting Hill", "Bayswater", "King's Cross", "Angel",
    "Hoxton", "Dalston", "Wapping", "Limehouse", "Poplar", "Canary Wharf", "Brixton", "Stockwell", "Clapham",
    "Walworth", "Elephant & Castle", "Farringdon", "Aldgate", "Euston", "Belgravia", "Knightsbridge",
)

LONDON_STREETS: tuple[str, ...] = (
    "Baker", "Oxford", "Regent", "Fleet", "Bishopsgate", "Cheapside", "Goswell", "Pentonville", "Gower",
    "Great Portland", "Wigmore", "Edgware", "Sloane", "Warwick", "Belgrave", "Eccleston", "Walworth", "Old Kent",
    "Tower Bridge", "Borough High", "Blackfriars", "York", "Millbank", "Horseferry", "Wandsworth", "Coldharbour",
    "Denmark Hill", "Camberwell", "Peckham", "Queens", "Princes", "Albert", "Grosvenor", "Portman", "Bedford",
    "Russell", "Tavistock", "Gordon", "Woburn", "Mecklenburgh", "Doughty", "Lamb's Conduit", "Theobalds",
    "Gray's Inn", "Chancery", "Hatton", "Leather", "St John", "Rosebery", "Amwell", "Myddelton", "Chapel", "Essex",
    "Liverpool", "Moorgate", "Finsbury", "Wilson", "Worship", "Curtain", "Great Eastern", "Kingsland",
    "Balls Pond", "Mildmay", "Green Lanes", "Canonbury", "Highbury", "Holloway", "Caledonian", "York Way",
    "Royal College", "Parkway", "Delancey", "Arlington", "Albany", "Osnaburgh", "Warren", "Grafton", "Charlotte",
    "Newman", "Berners", "Wardour", "Dean", "Frith", "Greek", "Shaftesbury", "Long Acre", "Drury", "Kingsway",
    "Aldwych", "Northumberland", "Whitehall", "Pall Mall", "Jermyn", "Curzon", "Mount", "Brook", "Davies", "Duke",
    "Orchard", "Seymour", "Gloucester", "Dorset", "Blandford", "George", "Crawford", "Harrowby", "Marchmont",
    "Handel", "Judd", "Argyle", "Birkenhead", "Caledonia", "Killick", "Risinghill", "Penton", "Cloudesley",
    "Barnsbury", "Thornhill", "Richmond", "Hemingford", "Copenhagen", "Bemerton", "Carnegie", "Wharfdale",
    "Crinan", "Rufford", "Treaty", "Everilda", "Muriel", "Southampton", "Bernard", "Herbrand", "Coram", "Hunter",
    "Wakefield", "Sidmouth", "Regent Square", "Frederick", "Ampton", "Cubitt", "Acton", "Wicklow", "Swinton",
)
LONDON_STREET_TYPES: tuple[str, ...] = (
    "Street", "Road", "Square", "Place", "Lane", "Gardens", "Walk", "Terrace", "Row", "Crescent",
)

SHENZHEN = ProfileSpec(
    name="shenzhen",
    crs=CRS_SHENZHEN,
    centre_lon=114.06,
    centre_lat=22.54,
    region_kind="grid",
    region_id_column="grid_id",
    trip_kind="signaling_od",
    start_date=date(2019, 11, 4),
    classmap_file="shenzhen_tnls.csv",
    landuse_code_column="DLBM",
    landuse_name_column="DLMC",
    landuse_id_column="BSM",
    cover_codes={
        "river": ("1101",),
        "lake": ("1103", "1104"),
        "farmland": ("0101", "0102", "0103", "0201"),
        "forest": ("0301", "0305", "0404"),
        "bare": ("1206",),
    },
    poi_categories=AMAP_CATEGORIES,
    places=SHENZHEN_PLACES,
    commute_decay_m=3_000.0,
    leisure_decay_m=1_500.0,
    background_decay_m=1_000.0,
    self_trip_weight=(1.0, 1.0, 1.0),
    coast=True,
)

LONDON = ProfileSpec(
    name="london",
    crs=CRS_LONDON,
    centre_lon=-0.12,
    centre_lat=51.51,
    region_kind="voronoi",
    region_id_column="region_id",
    trip_kind="journeys",
    start_date=date(2019, 7, 1),
    classmap_file="london_ukmap.csv",
    landuse_code_column="LANDUSE",
    landuse_name_column=None,
    landuse_id_column="FEATURE_ID",
    cover_codes={
        "river": ("Water",),
        "lake": ("Inland Water",),
        "farmland": ("Agriculture",),
        "forest": ("Woodland", "Natural Environment"),
        "bare": ("Vacant Land",),
    },
    poi_categories=POINTX_CATEGORIES,
    places=LONDON_PLACES,
    commute_decay_m=2_500.0,
    leisure_decay_m=1_500.0,
    background_decay_m=1_200.0,
    self_trip_weight=(0.0, 4.0, 0.2),
    coast=False,
)

PROFILE_SPECS: dict[str, ProfileSpec] = {"shenzhen": SHENZHEN, "london": LONDON}
assert tuple(PROFILE_SPECS) == PROFILES


def get_profile(name: str) -> ProfileSpec:
    """The :class:`ProfileSpec` called ``name``; ``ValueError`` for an unknown name."""
    try:
        return PROFILE_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic profile {name!r}; expected one of: {', '.join(PROFILES)}") from None
