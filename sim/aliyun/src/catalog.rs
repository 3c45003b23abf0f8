//! The fixed part of the simulated cloud: regions and zones, the default
//! VPC, vSwitches and security group of each region, images, instance types
//! and disk categories. The ids never change between runs, so a demo
//! template that names a vSwitch keeps working after a restart.

use std::net::Ipv4Addr;

/// A region with its default network.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) id: &'static str,
    pub(crate) local_name: &'static str,
    pub(crate) english_name: &'static str,
    /// What Aliyun's ids in this region start with after the kind (`i-bp1…`).
    pub(crate) id_prefix: &'static str,
    pub(crate) vpc_id: &'static str,
    pub(crate) security_group_id: &'static str,
    pub(crate) zones: &'static [Zone],
}

/// A zone and its vSwitch in the region's VPC.
#[derive(Debug)]
pub(crate) struct Zone {
    pub(crate) id: &'static str,
    pub(crate) local_name: &'static str,
    pub(crate) english_name: &'static str,
    pub(crate) vswitch_id: &'static str,
    /// The vSwitch owns 127.21.(16 × block).0/20; blocks are unique across
    /// regions because every simulated address lives on this host's
    /// loopback, and 127.21.0.x (the endpoints) is never in one.
    pub(crate) block: u8,
}

/// The VPC every region has: the whole simulated 127.21.0.0/16.
pub(crate) const VPC_CIDR: &str = "127.21.0.0/16";

pub(crate) static REGIONS: &[Region] = &[
    Region {
        id: "cn-hangzhou",
        local_name: "华东1（杭州）",
        english_name: "China (Hangzhou)",
        id_prefix: "bp1",
        vpc_id: "vpc-bp1dcpsim0default01",
        security_group_id: "sg-bp1dcpsim0default01",
        zones: &[
            Zone {
                id: "cn-hangzhou-h",
                local_name: "杭州 可用区H",
                english_name: "Hangzhou Zone H",
                vswitch_id: "vsw-bp1dcpsim0zoneh0001",
                block: 1,
            },
            Zone {
                id: "cn-hangzhou-i",
                local_name: "杭州 可用区I",
                english_name: "Hangzhou Zone I",
                vswitch_id: "vsw-bp1dcpsim0zonei0001",
                block: 2,
            },
        ],
    },
    Region {
        id: "cn-beijing",
        local_name: "华北2（北京）",
        english_name: "China (Beijing)",
        id_prefix: "2ze",
        vpc_id: "vpc-2zedcpsim0default01",
        security_group_id: "sg-2zedcpsim0default01",
        zones: &[
            Zone {
                id: "cn-beijing-a",
                local_name: "北京 可用区A",
                english_name: "Beijing Zone A",
                vswitch_id: "vsw-2zedcpsim0zonea0001",
                block: 3,
            },
            Zone {
                id: "cn-beijing-b",
                local_name: "北京 可用区B",
                english_name: "Beijing Zone B",
                vswitch_id: "vsw-2zedcpsim0zoneb0001",
                block: 4,
            },
        ],
    },
    Region {
        id: "cn-shanghai",
        local_name: "华东2（上海）",
        english_name: "China (Shanghai)",
        id_prefix: "uf6",
        vpc_id: "vpc-uf6dcpsim0default01",
        security_group_id: "sg-uf6dcpsim0default01",
        zones: &[Zone {
            id: "cn-shanghai-e",
            local_name: "上海 可用区E",
            english_name: "Shanghai Zone E",
            vswitch_id: "vsw-uf6dcpsim0zonee0001",
            block: 5,
        }],
    },
];

impl Zone {
    /// Addresses a vSwitch can hand out: a /20 less the network address and
    /// the last three, which Aliyun reserves.
    pub(crate) const CAPACITY: u32 = 4096 - 4;

    pub(crate) fn cidr(&self) -> String {
        format!("127.21.{}.0/20", u32::from(self.block) * 16)
    }

    /// The `n`th usable address (0-based, below [`Self::CAPACITY`]).
    pub(crate) fn address(&self, n: u32) -> Ipv4Addr {
        let base = u32::from(Ipv4Addr::new(127, 21, self.block * 16, 0));
        Ipv4Addr::from(base + 1 + n % Self::CAPACITY)
    }
}

pub(crate) fn region(id: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.id == id)
}

/// The region and zone a vSwitch belongs to.
pub(crate) fn vswitch(id: &str) -> Option<(&'static Region, &'static Zone)> {
    REGIONS
        .iter()
        .find_map(|r| r.zones.iter().find(|z| z.vswitch_id == id).map(|z| (r, z)))
}

/// A public system image, available in every region.
#[derive(Debug)]
pub(crate) struct Image {
    pub(crate) id: &'static str,
    pub(crate) os_name: &'static str,
    pub(crate) os_name_en: &'static str,
    pub(crate) platform: &'static str,
    pub(crate) family: &'static str,
    pub(crate) size_gib: u32,
}

pub(crate) static IMAGES: &[Image] = &[
    Image {
        id: "ubuntu_22_04_x64_20G_alibase_20240130.vhd",
        os_name: "Ubuntu  22.04 64位",
        os_name_en: "Ubuntu  22.04 64 bit",
        platform: "Ubuntu",
        family: "acs:ubuntu_22_04_x64",
        size_gib: 20,
    },
    Image {
        id: "centos_7_9_x64_20G_alibase_20240130.vhd",
        os_name: "CentOS  7.9 64位",
        os_name_en: "CentOS  7.9 64 bit",
        platform: "CentOS",
        family: "acs:centos_7_9_x64",
        size_gib: 20,
    },
    Image {
        id: "aliyun_3_x64_20G_alibase_20240130.vhd",
        os_name: "Alibaba Cloud Linux  3.2104 LTS 64位",
        os_name_en: "Alibaba Cloud Linux  3.2104 LTS 64 bit",
        platform: "Aliyun",
        family: "acs:alibaba_cloud_linux_3_2104_lts_x64",
        size_gib: 20,
    },
];

/// When the images were published (all from the same base date).
pub(crate) const IMAGE_CREATION_TIME: &str = "2024-01-30T08:00:00Z";

pub(crate) fn image(id: &str) -> Option<&'static Image> {
    IMAGES.iter().find(|i| i.id == id)
}

/// An instance type, offered in every zone.
#[derive(Debug)]
pub(crate) struct InstanceType {
    pub(crate) id: &'static str,
    pub(crate) family: &'static str,
    pub(crate) cpus: u32,
    pub(crate) memory_gib: f64,
    /// Pay-as-you-go price per hour, for RunInstances' `TradePrice`.
    pub(crate) hourly_price: f64,
}

pub(crate) static INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        id: "ecs.t6-c1m1.large",
        family: "ecs.t6",
        cpus: 2,
        memory_gib: 2.0,
        hourly_price: 0.085,
    },
    InstanceType {
        id: "ecs.g6.large",
        family: "ecs.g6",
        cpus: 2,
        memory_gib: 8.0,
        hourly_price: 0.39,
    },
    InstanceType {
        id: "ecs.c6.xlarge",
        family: "ecs.c6",
        cpus: 4,
        memory_gib: 8.0,
        hourly_price: 0.62,
    },
];

pub(crate) fn instance_type(id: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.id == id)
}

/// Disk categories offered in every zone, for system and data disks.
pub(crate) const DISK_CATEGORIES: &[&str] = &["cloud_efficiency", "cloud_ssd", "cloud_essd"];
